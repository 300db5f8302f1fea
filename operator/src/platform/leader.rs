//! Leader election on a `coordination.k8s.io` Lease, so that two replicas never both write.
//!
//! The algorithm is client-go's: every write of the Lease is conditional on the resourceVersion
//! last read, so two candidates can never both believe they took it. A candidate judges a
//! holder's lease expired by its own clock (the record unchanged for the lease's duration since
//! this process first saw it), never by the holder's timestamps, so clock skew between nodes
//! does not matter. The leader counts its deadline from the start of its last renewal that
//! succeeded, and gives up at `renew_deadline`, before any candidate may take over at
//! `lease_duration`: a deposed leader has stopped before the next one starts.
//!
//! Why not a crate: `kube-lease-manager` (the one that supports kube 5) renews and force-releases
//! with unconditional patches and reports no lost renewal, which lets two replicas write at
//! once; `kubert`'s lease, which is conditional, is pinned to kube 1.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tracing::{info, warn};

/// Where the Lease is, who this process is, and the timing (client-go's defaults).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease is valid after its last renewal, for the candidates.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a renewal that succeeded; shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// Between a candidate's reads of the Lease, and between the leader's retries of a failed
    /// renewal.
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseSettings {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The leader renews twice per deadline, so one failed attempt still leaves time to retry.
    fn renew_every(&self) -> Duration {
        self.renew_deadline / 2
    }

    /// `namespace/name`, for people.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What one look at the Lease allows this process to do.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The lease is free, expired or already ours: write it as ours.
    Claim { transitions: i32, taken_over: bool },
    /// Another holder renewed it recently enough.
    Wait { holder: String },
}

/// Pure: the decision of client-go's tryAcquireOrRenew, from the Lease's spec and how long this
/// process has seen it unchanged.
fn decide(spec: &LeaseSpec, unchanged_for: Duration, me: &str, default: Duration) -> Step {
    let transitions = spec.lease_transitions.unwrap_or(0);
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Step::Claim {
            transitions,
            taken_over: false,
        };
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default);
    if holder.is_empty() || unchanged_for >= duration {
        return Step::Claim {
            transitions: transitions.saturating_add(1),
            taken_over: true,
        };
    }
    Step::Wait {
        holder: holder.to_string(),
    }
}

/// The outcome of one attempt to take or renew the lease.
#[derive(Debug)]
pub enum Attempt {
    Leading,
    HeldBy(String),
    /// Someone else wrote the Lease between our read and our write: look again.
    Conflict,
}

/// Why the leader stopped leading.
#[derive(Debug)]
pub enum Lost {
    /// No renewal succeeded within the renew deadline (the API unreachable or slow).
    Deadline,
    /// Another process holds the lease.
    TakenBy(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Deadline => write!(f, "no renewal of the lease succeeded within the deadline"),
            Lost::TakenBy(holder) => write!(f, "{holder} holds the lease"),
        }
    }
}

struct Observed {
    lease: Lease,
    /// When this process first saw this resourceVersion.
    since: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
    leading: bool,
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
            leading: false,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Wait until this process holds the lease; `waiting` hears each reason it cannot yet.
    /// Returns when the winning request started: the leader's deadline counts from there.
    pub async fn acquire(&mut self, waiting: impl Fn(Waiting)) -> Instant {
        let mut last_holder = String::new();
        loop {
            let started = Instant::now();
            let limit = self.settings.renew_deadline;
            match tokio::time::timeout(limit, self.attempt()).await {
                Ok(Ok(Attempt::Leading)) => {
                    info!(lease = %self.settings.lease(), identity = %self.settings.identity, "leading");
                    return started;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if holder != last_holder {
                        info!(lease = %self.settings.lease(), %holder, "standby: another replica leads");
                        last_holder.clone_from(&holder);
                    }
                    waiting(Waiting::Standby(holder));
                }
                Ok(Ok(Attempt::Conflict)) => {}
                Ok(Err(e)) => {
                    warn!(lease = %self.settings.lease(), error = %e, "reading the lease");
                    waiting(Waiting::Unreachable(e.to_string()));
                }
                Err(_) => waiting(Waiting::Unreachable(format!(
                    "no answer within {}s",
                    limit.as_secs()
                ))),
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renew the lease until it is lost. `renewed` is when the last renewal that succeeded
    /// started; leading ends at `renewed + renew_deadline` at the latest, even if a request hangs.
    pub async fn hold(&mut self, mut renewed: Instant) -> Lost {
        let mut next = renewed + self.settings.renew_every();
        loop {
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            let deadline = renewed + self.settings.renew_deadline;
            if started >= deadline {
                self.leading = false;
                return Lost::Deadline;
            }
            // One hung request must leave time for another attempt.
            let limit = deadline.min(started + self.settings.retry_period * 2);
            match tokio::time::timeout_at(limit, self.attempt()).await {
                Ok(Ok(Attempt::Leading)) => {
                    renewed = started;
                    next = started + self.settings.renew_every();
                    continue;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    self.leading = false;
                    return Lost::TakenBy(holder);
                }
                Ok(Ok(Attempt::Conflict)) => {}
                Ok(Err(e)) => {
                    warn!(lease = %self.settings.lease(), error = %e, "renewing the lease")
                }
                Err(_) => warn!(lease = %self.settings.lease(), "renewing the lease: no answer"),
            }
            next = (Instant::now() + self.settings.retry_period).min(deadline);
        }
    }

    /// On a clean shutdown, after the controllers stopped: free the lease so that a standby
    /// takes over at its next look instead of waiting for the lease to expire.
    pub async fn release(&mut self) {
        if !self.leading {
            return;
        }
        self.leading = false;
        let Some(observed) = self.observed.take() else {
            return;
        };
        let mut lease = observed.lease;
        // Twice at most: a renewal cut short may have landed after the version we hold.
        for _ in 0..2 {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
            // Conditional like every write: if someone else wrote it meanwhile, look again.
            let written = self
                .api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await;
            match written {
                Ok(_) => {
                    info!(lease = %self.settings.lease(), "released the lease");
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    match self.api.get_opt(&self.settings.name).await {
                        Ok(Some(current)) => lease = current,
                        _ => return,
                    }
                }
                Err(e) => {
                    warn!(lease = %self.settings.lease(), error = %e, "releasing the lease");
                    return;
                }
            }
        }
    }

    /// One look at the Lease and, where allowed, one conditional write of it.
    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        // The leader writes over the version its own last write returned: no read needed.
        let current = match (&self.observed, self.leading) {
            (Some(observed), true) => observed.lease.clone(),
            _ => match self.api.get_opt(&self.settings.name).await? {
                Some(lease) => {
                    self.observe(lease.clone());
                    lease
                }
                None => return self.create().await,
            },
        };
        let since = self
            .observed
            .as_ref()
            .map_or_else(Instant::now, |o| o.since);
        let spec = current.spec.clone().unwrap_or_default();
        let default = self.settings.lease_duration;
        match decide(&spec, since.elapsed(), &self.settings.identity, default) {
            Step::Wait { holder } => Ok(Attempt::HeldBy(holder)),
            Step::Claim {
                transitions,
                taken_over,
            } => {
                let mut next = current;
                next.spec = Some(self.claimed(spec, transitions, taken_over));
                let written = self
                    .api
                    .replace(&self.settings.name, &PostParams::default(), &next)
                    .await;
                self.written(written)
            }
        }
    }

    async fn create(&mut self) -> Result<Attempt, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                labels: Some(
                    [(
                        crate::labels::MANAGED_BY.to_string(),
                        crate::labels::MANAGED_BY_VALUE.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(self.claimed(LeaseSpec::default(), 0, true)),
        };
        let created = self.api.create(&PostParams::default(), &lease).await;
        self.written(created)
    }

    fn claimed(&self, mut spec: LeaseSpec, transitions: i32, taken_over: bool) -> LeaseSpec {
        let now = now();
        if taken_over {
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.renew_time = Some(now);
        spec.lease_duration_seconds =
            Some(i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX));
        spec.lease_transitions = Some(transitions);
        spec
    }

    fn written(&mut self, result: Result<Lease, kube::Error>) -> Result<Attempt, kube::Error> {
        match result {
            Ok(lease) => {
                self.observe(lease);
                self.leading = true;
                Ok(Attempt::Leading)
            }
            // Conflict on replace, AlreadyExists on create: another writer was first.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Read it afresh next time, even as the leader.
                self.observed = None;
                self.leading = false;
                Ok(Attempt::Conflict)
            }
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, lease: Lease) {
        let same = self
            .observed
            .as_ref()
            .is_some_and(|o| o.lease.metadata.resource_version == lease.metadata.resource_version);
        if !same {
            self.observed = Some(Observed {
                lease,
                since: Instant::now(),
            });
        }
    }
}

/// Why a candidate does not lead yet, for `/readyz`.
#[derive(Clone, Debug)]
pub enum Waiting {
    Standby(String),
    Unreachable(String),
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(15);

    fn spec(holder: Option<&str>, seconds: Option<i32>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: seconds,
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn a_free_lease_is_taken_and_counts_a_transition() {
        for holder in [None, Some("")] {
            assert_eq!(
                decide(&spec(holder, Some(15), 3), Duration::ZERO, "a", DEFAULT),
                Step::Claim {
                    transitions: 4,
                    taken_over: true
                }
            );
        }
    }

    #[test]
    fn our_own_lease_is_renewed_without_a_transition() {
        assert_eq!(
            decide(
                &spec(Some("a"), Some(15), 3),
                Duration::from_secs(60),
                "a",
                DEFAULT
            ),
            Step::Claim {
                transitions: 3,
                taken_over: false
            }
        );
    }

    #[test]
    fn another_holder_is_waited_on_until_its_record_stood_still_for_its_duration() {
        let held = spec(Some("b"), Some(15), 1);
        assert_eq!(
            decide(&held, Duration::from_secs(14), "a", DEFAULT),
            Step::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(&held, Duration::from_secs(15), "a", DEFAULT),
            Step::Claim {
                transitions: 2,
                taken_over: true
            }
        );
        // A released lease (duration 1 s) is taken a second after it was seen.
        let released = spec(Some("b"), Some(1), 1);
        assert!(matches!(
            decide(&released, Duration::from_secs(1), "a", DEFAULT),
            Step::Claim { .. }
        ));
        // No duration recorded: ours is assumed.
        assert!(matches!(
            decide(
                &spec(Some("b"), None, 1),
                Duration::from_secs(14),
                "a",
                DEFAULT
            ),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn the_leader_gives_up_before_a_candidate_may_take_over() {
        let s = LeaseSettings::new("ns".into(), "l".into(), "a".into());
        assert!(s.renew_deadline < s.lease_duration);
        assert!(s.renew_every() + s.retry_period < s.renew_deadline);
    }
}
