//! Authentication: real CQL logins that show how the node answers them (observed), and the
//! action that sets it up (superuser role, `system_auth` replication, the default role
//! disabled).
//!
//! Every verdict comes from a login on the node's own CQL port: the node's answer to a login
//! is the only proof of what a client would see.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    ConnectionError, ConnectionPoolError, ConnectionSetupRequestErrorKind, DbError, MetadataError,
    NewSessionError,
};
use scylla::policies::host_filter::AllowListHostFilter;
use serde_json::json;
use stateward_proto::v1::{ActionResult, CassandraAuth, Verification};
use tracing::{info, warn};

use super::keyspaces::parse_replication;
use super::{ACTION_POLL, Cassandra, READ_TIMEOUT, SS};
use crate::driver::{ActionRun, failed, verified};

/// How often the observation logs in to check what clients see.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// One login, connection and authentication together.
const LOGIN_LIMIT: Duration = Duration::from_secs(5);
/// All the checks of one observation: well inside the observation's own time limit, so slow
/// logins never make the node's status unknown (and the pod unready).
const CHECKS_LIMIT: Duration = Duration::from_millis(2500);
/// Readings of a repair's status that may fail in a row (the command is unknown after a
/// restart of Cassandra) before the repair counts as lost.
const REPAIR_STATUS_MISSES: u32 = 20;
/// A repair of `system_auth` (a few small tables).
const REPAIR_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The role Cassandra creates, with this password, when it first starts with authentication.
const DEFAULT_ROLE: &str = "cassandra";
const DEFAULT_PASSWORD: &str = "cassandra";

/// Where the superuser Secret is mounted and the last check of what logins show.
pub struct AuthState {
    pub enabled: bool,
    superuser_dir: PathBuf,
    last_check: std::sync::Mutex<Option<(Instant, CassandraAuth)>>,
}

impl AuthState {
    pub fn new(enabled: bool, superuser_dir: PathBuf) -> Self {
        AuthState {
            enabled,
            superuser_dir,
            last_check: std::sync::Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<CassandraAuth> {
        let last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < CHECK_EVERY)
            .map(|(_, auth)| auth.clone())
    }

    fn remember(&self, auth: Option<CassandraAuth>) {
        *self.last_check.lock().unwrap_or_else(|p| p.into_inner()) =
            auth.map(|a| (Instant::now(), a));
    }
}

/// The superuser's name and password, from the mounted Secret's `username` and `password`.
struct Credentials {
    username: String,
    password: String,
}

fn read_credentials(dir: &Path) -> Result<Credentials, String> {
    let read = |key: &str| {
        let path = dir.join(key);
        std::fs::read_to_string(&path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("the superuser Secret's {key} ({}): {e}", path.display()))
    };
    let credentials = Credentials {
        username: read("username")?,
        password: read("password")?,
    };
    if credentials.username.is_empty() || credentials.password.is_empty() {
        return Err("the superuser Secret's username or password is empty".into());
    }
    if credentials.username == DEFAULT_ROLE {
        return Err(format!(
            "the superuser may not be the default role {DEFAULT_ROLE:?}, which Stateward disables"
        ));
    }
    Ok(credentials)
}

/// How the node answered a login.
enum Login {
    Accepted(Box<Session>),
    /// The node said no: bad credentials, or credentials required and none given.
    Refused(String),
    /// No answer that tells (unreachable, timed out, another error).
    Unknown(String),
}

/// Whether a failed session is the node refusing the login: credentials required and none
/// given, or bad credentials. Cassandra answers "Unable to perform authentication" (its role
/// read was unavailable or timed out) with the same error code, so the code alone proves
/// nothing: a refusal is only the bad-credentials answer ("Provided username ... incorrect").
fn is_refusal(e: &NewSessionError) -> bool {
    let NewSessionError::MetadataError(MetadataError::ConnectionPoolError(
        ConnectionPoolError::Broken {
            last_connection_error: ConnectionError::ConnectionSetupRequestError(setup),
        },
    )) = e
    else {
        return false;
    };
    match setup.get_error() {
        ConnectionSetupRequestErrorKind::MissingAuthentication => true,
        ConnectionSetupRequestErrorKind::DbError(DbError::AuthenticationError, message) => {
            message.starts_with("Provided username")
        }
        _ => false,
    }
}

/// A CQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A quoted CQL identifier (role names keep their case).
fn identifier(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A password nobody knows, for the default role.
fn random_password() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Cassandra {
    async fn login(&self, user: Option<(&str, &str)>) -> Login {
        let filter = match AllowListHostFilter::new([self.cql]) {
            Ok(f) => f,
            Err(e) => return Login::Unknown(format!("host filter: {e}")),
        };
        let mut builder = SessionBuilder::new()
            .known_node_addr(self.cql)
            .host_filter(Arc::new(filter))
            .fetch_schema_metadata(false)
            .connection_timeout(LOGIN_LIMIT);
        if let Some((name, password)) = user {
            builder = builder.user(name, password);
        }
        match tokio::time::timeout(LOGIN_LIMIT * 2, builder.build()).await {
            Err(_) => Login::Unknown(format!("no answer within {:?}", LOGIN_LIMIT * 2)),
            Ok(Ok(session)) => Login::Accepted(Box::new(session)),
            Ok(Err(e)) if is_refusal(&e) => Login::Refused(e.to_string()),
            Ok(Err(e)) => Login::Unknown(e.to_string()),
        }
    }

    /// What logins show now, checked at most every [`CHECK_EVERY`]; `None` when the node runs
    /// without authentication.
    pub(super) async fn auth_status(&self) -> Option<CassandraAuth> {
        if !self.auth.enabled {
            return None;
        }
        if let Some(cached) = self.auth.cached() {
            return Some(cached);
        }
        // Remembered even when cut short, so a slow node is checked again only after
        // CHECK_EVERY, not on every observation.
        let auth = tokio::time::timeout(CHECKS_LIMIT, self.check_logins())
            .await
            .unwrap_or_else(|_| CassandraAuth {
                problem: format!("the login checks did not finish within {CHECKS_LIMIT:?}"),
                ..CassandraAuth::default()
            });
        self.auth.remember(Some(auth.clone()));
        Some(auth)
    }

    async fn check_logins(&self) -> CassandraAuth {
        let mut problems = Vec::new();
        let mut auth = CassandraAuth::default();
        match self.login(None).await {
            Login::Refused(_) => auth.anonymous_refused = true,
            Login::Accepted(_) => problems.push("a login without credentials is accepted".into()),
            Login::Unknown(e) => problems.push(format!("login without credentials: {e}")),
        }
        match read_credentials(&self.auth.superuser_dir) {
            Ok(c) => match self.login(Some((&c.username, &c.password))).await {
                Login::Accepted(session) => match is_superuser(&session, &c.username).await {
                    Ok(true) => auth.superuser_login = true,
                    Ok(false) => problems.push(format!("{} is not a superuser", c.username)),
                    Err(e) => problems.push(e),
                },
                // A conclusive answer, not a problem of the check: the operator reads it.
                Login::Refused(_) => {}
                Login::Unknown(e) => problems.push(format!("login as {}: {e}", c.username)),
            },
            Err(e) => problems.push(e),
        }
        match self.login(Some((DEFAULT_ROLE, DEFAULT_PASSWORD))).await {
            Login::Accepted(_) => auth.default_role_login = true,
            Login::Refused(_) => {}
            Login::Unknown(e) => problems.push(format!("login as {DEFAULT_ROLE}: {e}")),
        }
        auth.checks_complete = problems.is_empty();
        auth.problem = problems.join("; ");
        auth
    }

    /// The action: see `CassandraAuthAction` in the contract for the steps.
    pub(super) async fn setup_auth(&self, replication: u32, run: &ActionRun) -> ActionResult {
        if !self.auth.enabled {
            return failed("this node runs without authentication (AllowAllAuthenticator)");
        }
        if replication == 0 {
            return failed("system_auth replication 0 asked for");
        }
        let credentials = match read_credentials(&self.auth.superuser_dir) {
            Ok(c) => c,
            Err(e) => return failed(e),
        };
        let result = self.configure(&credentials, replication, run).await;
        // What clients see has changed: the next observation logs in again.
        self.auth.remember(None);
        match result {
            Ok(()) => self.verify_auth(&credentials, replication).await,
            Err(e) => failed(e),
        }
    }

    async fn configure(
        &self,
        c: &Credentials,
        replication: u32,
        run: &ActionRun,
    ) -> Result<(), String> {
        let superuser = (c.username.as_str(), c.password.as_str());
        // Logged in as the superuser, or as the default role when the superuser is not made
        // yet (then `session` is the default role's).
        let (session, exists) = match self.login(Some(superuser)).await {
            Login::Accepted(s) => (s, true),
            Login::Unknown(e) => return Err(format!("login as {}: {e}", c.username)),
            Login::Refused(_) => (self.default_role_session(c).await?, false),
        };
        let datacenter = self.local_datacenter().await?;
        let changed = self.auth_replication(&datacenter).await? != replication;
        if changed {
            run.progress(
                format!("setting system_auth's replicas in {datacenter} to {replication}"),
                None,
            );
            let alter = format!(
                "ALTER KEYSPACE system_auth WITH replication = {{'class': 'NetworkTopologyStrategy', {}: {replication}}}",
                literal(&datacenter)
            );
            run_cql(&session, &alter).await?;
        }
        // Written after the change, the superuser's row goes to every replica the new
        // replication names, however many nodes the repair below covers; written again on
        // every run, so a write refused once (this node did not yet find the role where it now
        // looks) is made by a later run.
        {
            let verb = if exists { "ALTER" } else { "CREATE" };
            run.progress(format!("writing the superuser role {}", c.username), None);
            match run_cql(&session, &superuser_statement(verb, c)).await {
                Ok(()) => {}
                Err(e) if exists => warn!("{e}; left to the repair and the next run"),
                Err(e) => return Err(e),
            }
        }
        drop(session);
        // Every run repairs, not only the one that changed the replication: a run cut short
        // after the change is completed by the next. `system_auth` is small, and this action
        // only runs while something is missing.
        if replication > 1 {
            run.progress("repairing system_auth", None);
            self.repair_system_auth().await?;
        }
        // A fresh login: the roles are where the new replication puts them.
        let session = match self.login(Some(superuser)).await {
            Login::Accepted(s) => s,
            Login::Refused(e) | Login::Unknown(e) => {
                return Err(format!("login as {}: {e}", c.username));
            }
        };
        match role_flags(&session, DEFAULT_ROLE).await? {
            Some((false, false)) | None => {}
            Some(_) => {
                run.progress(format!("disabling the default role {DEFAULT_ROLE}"), None);
                let disable = format!(
                    "ALTER ROLE {DEFAULT_ROLE} WITH PASSWORD = {} AND SUPERUSER = false AND LOGIN = false",
                    literal(&random_password()?)
                );
                run_cql(&session, &disable).await?;
            }
        }
        Ok(())
    }

    /// The default role's session, to create the superuser with. Cassandra creates that role
    /// a few seconds after its first start, so an early try fails and is asked again.
    async fn default_role_session(&self, c: &Credentials) -> Result<Box<Session>, String> {
        match self.login(Some((DEFAULT_ROLE, DEFAULT_PASSWORD))).await {
            Login::Accepted(s) => Ok(s),
            Login::Refused(_) => Err(format!(
                "neither {} nor the default role {DEFAULT_ROLE} can log in: the superuser's \
                 password differs from the one the role was created with, or the default \
                 role is not created yet",
                c.username
            )),
            Login::Unknown(e) => Err(format!("login as {DEFAULT_ROLE}: {e}")),
        }
    }

    /// `system_auth`'s replicas in `datacenter` by NetworkTopologyStrategy; 0 for any other
    /// strategy (so it is changed to NetworkTopologyStrategy).
    async fn auth_replication(&self, datacenter: &str) -> Result<u32, String> {
        let info = self
            .jolokia
            .exec(
                SS,
                "getKeyspaceReplicationInfo",
                vec![json!("system_auth")],
                READ_TIMEOUT,
            )
            .await
            .map_err(|e| format!("replication of system_auth: {e}"))?;
        let info = info.as_str().unwrap_or_default();
        match parse_replication(info, datacenter) {
            Some((strategy, rf)) if strategy == "NetworkTopologyStrategy" => Ok(rf),
            Some(_) => Ok(0),
            None => Err(format!("replication of system_auth: cannot read {info:?}")),
        }
    }

    /// A full repair of `system_auth` from this node, followed to its end.
    async fn repair_system_auth(&self) -> Result<(), String> {
        let options =
            json!({"parallelism": "parallel", "incremental": "false", "primaryRange": "false"});
        let command = self
            .jolokia
            .exec(
                SS,
                "repairAsync",
                vec![json!("system_auth"), options],
                READ_TIMEOUT,
            )
            .await
            .map_err(|e| format!("starting the repair of system_auth: {e}"))?;
        let command = command
            .as_i64()
            .ok_or_else(|| format!("repairAsync: unexpected value {command}"))?;
        // 0: nothing to repair (a single replica).
        if command == 0 {
            return Ok(());
        }
        let start = Instant::now();
        let mut misses = 0;
        while start.elapsed() < REPAIR_LIMIT {
            let status = self
                .jolokia
                .exec(
                    SS,
                    "getParentRepairStatus",
                    vec![json!(command)],
                    READ_TIMEOUT,
                )
                .await;
            let state = status
                .as_ref()
                .ok()
                .and_then(|v| v.get(0))
                .and_then(|s| s.as_str());
            match state {
                Some("COMPLETED") => {
                    info!(command, "system_auth repaired");
                    return Ok(());
                }
                Some("FAILED") => {
                    return Err(format!("the repair of system_auth failed: {status:?}"));
                }
                Some(_) => misses = 0,
                // An unknown command (Cassandra restarted) or no answer.
                None => {
                    misses += 1;
                    if misses >= REPAIR_STATUS_MISSES {
                        return Err(format!(
                            "the repair of system_auth (command {command}) is no longer known: {status:?}"
                        ));
                    }
                }
            }
            tokio::time::sleep(ACTION_POLL).await;
        }
        Err(format!(
            "the repair of system_auth did not end within {REPAIR_LIMIT:?}"
        ))
    }

    async fn verify_auth(&self, c: &Credentials, replication: u32) -> ActionResult {
        let logins = self.check_logins().await;
        let rf = match self.local_datacenter().await {
            Ok(dc) => self.auth_replication(&dc).await,
            Err(e) => Err(e),
        };
        let method = format!("CQL login on {}", self.cql);
        verified(vec![
            Verification {
                check: format!("{} logs in as a superuser", c.username),
                method: method.clone(),
                observed: seen(logins.superuser_login, &logins.problem),
                passed: logins.superuser_login,
            },
            Verification {
                check: format!("the default role {DEFAULT_ROLE} cannot log in"),
                method: method.clone(),
                observed: seen(!logins.default_role_login, &logins.problem),
                passed: !logins.default_role_login,
            },
            Verification {
                check: "a login without credentials is refused".into(),
                method,
                observed: seen(logins.anonymous_refused, &logins.problem),
                passed: logins.anonymous_refused,
            },
            Verification {
                check: format!("system_auth has {replication} replicas in this datacenter"),
                method: format!("Jolokia exec {SS} getKeyspaceReplicationInfo"),
                observed: match &rf {
                    Ok(n) => n.to_string(),
                    Err(e) => e.clone(),
                },
                passed: rf == Ok(replication),
            },
        ])
    }
}

fn seen(ok: bool, problem: &str) -> String {
    match (ok, problem.is_empty()) {
        (true, _) => "yes".into(),
        (false, true) => "no".into(),
        (false, false) => format!("no ({problem})"),
    }
}

fn superuser_statement(verb: &str, c: &Credentials) -> String {
    let if_absent = if verb == "CREATE" {
        "IF NOT EXISTS "
    } else {
        ""
    };
    format!(
        "{verb} ROLE {if_absent}{} WITH PASSWORD = {} AND SUPERUSER = true AND LOGIN = true",
        identifier(&c.username),
        literal(&c.password)
    )
}

async fn run_cql(session: &Session, cql: &str) -> Result<(), String> {
    session
        .query_unpaged(cql, ())
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", cql.split(" WITH ").next().unwrap_or(cql)))
}

/// `(can_login, is_superuser)` of a role; `None` when it does not exist.
async fn role_flags(session: &Session, role: &str) -> Result<Option<(bool, bool)>, String> {
    let rows = session
        .query_unpaged(
            "SELECT can_login, is_superuser FROM system_auth.roles WHERE role = ?",
            (role,),
        )
        .await
        .map_err(|e| format!("reading role {role}: {e}"))?
        .into_rows_result()
        .map_err(|e| format!("reading role {role}: {e}"))?;
    let row = rows
        .maybe_first_row::<(Option<bool>, Option<bool>)>()
        .map_err(|e| format!("reading role {role}: {e}"))?;
    Ok(row.map(|(login, superuser)| (login.unwrap_or(false), superuser.unwrap_or(false))))
}

async fn is_superuser(session: &Session, role: &str) -> Result<bool, String> {
    Ok(role_flags(session, role)
        .await?
        .is_some_and(|(_, superuser)| superuser))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cql_quoting_doubles_the_quote() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn credentials_come_from_the_mounted_secret() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("stateward-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        assert!(
            read_credentials(&dir).is_err(),
            "missing files are an error"
        );
        std::fs::write(dir.join("username"), "app-admin\n")?;
        std::fs::write(dir.join("password"), "s3cret")?;
        let c = read_credentials(&dir).map_err(anyhow::Error::msg)?;
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("app-admin", "s3cret")
        );
        std::fs::write(dir.join("username"), "cassandra")?;
        assert!(
            read_credentials(&dir).is_err(),
            "the default role is refused"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn the_superuser_statement_quotes_both_parts() {
        let c = Credentials {
            username: "App".into(),
            password: "p'w".into(),
        };
        assert_eq!(
            superuser_statement("CREATE", &c),
            "CREATE ROLE IF NOT EXISTS \"App\" WITH PASSWORD = 'p''w' AND SUPERUSER = true AND LOGIN = true"
        );
    }
}
