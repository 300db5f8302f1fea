//! The CPU time a future spends being polled: the sum, over its polls, of the polling
//! thread's CPU time. Wall time counts the waits on the API and the pilots too; this is what
//! a reconcile costs the machine.

use std::future::Future;
use std::time::Duration;

/// Runs `future` to its end; returns its output and the CPU time its polls took.
pub async fn cpu_timed<F: Future>(future: F) -> (F::Output, Duration) {
    let mut future = std::pin::pin!(future);
    let mut spent = Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let before = thread_cpu_time();
        let polled = future.as_mut().poll(cx);
        spent += thread_cpu_time().saturating_sub(before);
        polled
    })
    .await;
    (output, spent)
}

/// The calling thread's CPU time (user and system); zero if the clock cannot be read.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes to it.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if read != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_work_of_polls_not_the_waits_between_them() {
        let ((), cpu) = cpu_timed(async {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(30) {
                std::hint::black_box(0u64);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
        assert!(
            cpu >= Duration::from_millis(20),
            "busy 30 ms, counted {cpu:?}"
        );
        assert!(
            cpu < Duration::from_millis(150),
            "slept 200 ms, counted {cpu:?}"
        );
    }
}
