//! How the issuance routes run a generator: bounded by the backend timeout, and never cancelled
//! half-way by a client that goes away. Both cost something only when there is something to
//! wait for: a local generator (Password, UUID, ...) answers on its first poll, and then neither
//! a timer nor a task is made for it.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

/// Polls `fut` once in the caller's task.
async fn poll_once<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// `fut`'s output, or `None` when it has not finished within `limit` of its first wait.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    if let Poll::Ready(out) = poll_once(fut.as_mut()).await {
        return Some(out);
    }
    tokio::time::timeout(limit, fut).await.ok()
}

/// Runs `fut` to its end even if the caller is dropped: it is polled here first and moved to
/// a task of its own, which runs to the end whatever happens to the caller, as soon as it has
/// to wait. There is no await point between the first poll and the spawn, so a dropped caller
/// can never cancel it half-way. `Err` when the task panicked.
pub async fn to_completion<F>(fut: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut fut = Box::pin(fut);
    if let Poll::Ready(out) = poll_once(fut.as_mut()).await {
        return Ok(out);
    }
    tokio::spawn(fut).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn within_returns_what_is_ready_without_a_timer() {
        // A zero limit would time out anything that reached the timer.
        assert_eq!(within(Duration::ZERO, async { 7 }).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn within_times_out_what_waits_too_long() {
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(within(Duration::from_secs(1), slow).await, None);
        let quick = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            3
        };
        assert_eq!(within(Duration::from_secs(1), quick).await, Some(3));
    }

    #[tokio::test]
    async fn to_completion_finishes_even_when_the_caller_is_dropped() {
        let done = Arc::new(AtomicBool::new(false));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let flag = done.clone();
        let caller = tokio::spawn(to_completion(async move {
            let _ = wait.await;
            flag.store(true, Ordering::SeqCst);
        }));
        // Let the caller poll once and detach the work, then drop the caller.
        tokio::task::yield_now().await;
        caller.abort();
        assert!(caller.await.is_err_and(|e| e.is_cancelled()));
        go.send(())
            .expect("the detached work still holds the receiver");
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the detached work did not finish after its caller was dropped");
    }

    #[tokio::test]
    async fn to_completion_reports_a_panic() {
        let joined = to_completion(async {
            tokio::task::yield_now().await;
            panic!("boom");
        })
        .await;
        assert!(joined.is_err_and(|e| e.is_panic()));
    }
}
