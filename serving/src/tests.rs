//! The deadlines and the cap over a real hyper connection (HTTP/1.1 written by hand on an
//! in-memory pipe), on tokio's paused clock: time moves only when everything waits, so a test
//! of a 10 s deadline takes no time and cannot be flaky.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

const LIMITS: Limits = Limits {
    read_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(300),
    max_connections: 4,
};

/// Answers `200 <body length>`; `/slow` first works for a minute (longer than any deadline);
/// `/ignore` drops the request, works for a minute and answers `200 ignored`; `/empty` answers
/// an empty body; `/detach` hands its body to a task that drops it a second later; a body that
/// times out is answered `408` with the error.
async fn handle(req: Request<Deadlined<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/detach" {
        // The body outlives the answer (a handler streaming it elsewhere).
        let body = req.into_body();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(body);
        });
        return Ok(Response::new(Full::new(Bytes::from("detached"))));
    }
    if req.uri().path() == "/ignore" {
        drop(req);
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(Response::new(Full::new(Bytes::from("ignored"))));
    }
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if req.uri().path() == "/empty" {
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    if req.uri().path() == "/read-then-slow" {
        // Reads its body, then works for a minute.
        let read = req.into_body().collect().await.map(|b| b.to_bytes().len());
        tokio::time::sleep(Duration::from_secs(60)).await;
        let text = read.map_or_else(|e| e.to_string(), |n| n.to_string());
        return Ok(Response::new(Full::new(Bytes::from(text))));
    }
    let (status, text) = match req.into_body().collect().await {
        Ok(body) => (StatusCode::OK, body.to_bytes().len().to_string()),
        Err(e) => match body_timed_out(&*e) {
            Some(t) => (StatusCode::REQUEST_TIMEOUT, t.to_string()),
            None => (StatusCode::BAD_REQUEST, e.to_string()),
        },
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response"))
}

/// One connection served by hyper-util under `guard`; the client end and the connection's
/// task (its result: how hyper ended).
fn connect(guard: &Guard, slot: Slot) -> (DuplexStream, JoinHandle<Result<(), String>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    serve(guard, slot, client, server)
}

fn serve(
    guard: &Guard,
    slot: Slot,
    client: DuplexStream,
    server: DuplexStream,
) -> (DuplexStream, JoinHandle<Result<(), String>>) {
    let (io, service) = guard.open(server, tower::service_fn(handle), slot);
    let conn = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    let task = tokio::spawn(async move { conn.await.map_err(|e| format!("{e:?}")) });
    (client, task)
}

async fn open(guard: &Guard) -> (DuplexStream, JoinHandle<Result<(), String>>) {
    let slot = guard.admit().await;
    connect(guard, slot)
}

/// Reads one answer (small, `content-length` framed) and returns its status line and body.
async fn answer(client: &mut (impl tokio::io::AsyncRead + Unpin)) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = client.read(&mut buf).await.expect("reading the answer");
        assert!(n > 0, "connection closed before a whole answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            if body.len() >= length {
                let status = head.lines().next().unwrap_or_default().to_owned();
                return (status, body.to_owned());
            }
        }
    }
}

/// Opens a connection, sends `first`, waits `pause`, sends `rest` and reads the answer.
async fn in_two_parts(
    guard: &Guard,
    first: &[u8],
    pause: Duration,
    rest: &[u8],
) -> (String, String) {
    let (mut client, _task) = open(guard).await;
    client.write_all(first).await.expect("writing");
    tokio::time::sleep(pause).await;
    client.write_all(rest).await.expect("writing");
    answer(&mut client).await
}

/// Waits for the server to close the connection (bounded by the paused clock's minutes).
async fn closed(client: &mut DuplexStream) {
    let mut buf = [0u8; 1024];
    let wait = tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        while client.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    wait.await.expect("the server never closed the connection");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_after_the_read_timeout() {
    let guard = Guard::new(LIMITS);
    let start = Instant::now();
    let (mut client, task) = open(&guard).await;
    closed(&mut client).await;
    assert_eq!(start.elapsed(), LIMITS.read_timeout);
    let ended = task.await.expect("the connection task");
    assert!(
        ended.as_ref().is_err_and(|e| e.contains("TimedOut")),
        "{ended:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_read_timeout() {
    let guard = Guard::new(LIMITS);
    let start = Instant::now();
    let (client, _task) = open(&guard).await;
    let (mut reader, mut writer) = tokio::io::split(client);
    // A byte every second: each one would restart a deadline counted from the last byte.
    let trickle = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3600), async {
        while reader.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    closed
        .await
        .expect("a trickled head kept the connection open");
    assert_eq!(start.elapsed(), LIMITS.read_timeout);
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_outlives_the_read_timeout_until_the_idle_timeout() {
    let guard = Guard::new(LIMITS);
    let (mut client, task) = open(&guard).await;
    for _ in 0..3 {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("writing");
        assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
        // Idle for three read timeouts: hyper's header_read_timeout would have closed it.
        tokio::time::sleep(LIMITS.read_timeout * 3).await;
        assert!(!task.is_finished(), "an idle connection was closed early");
    }
    let idle_since = Instant::now() - LIMITS.read_timeout * 3;
    closed(&mut client).await;
    assert_eq!(idle_since.elapsed(), LIMITS.idle_timeout);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_when_its_first_request_came_whole() {
    // The request waits in the pipe before hyper first reads: the connection never waits for
    // a head, so the first timer it arms is the idle one.
    let guard = Guard::new(LIMITS);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    let slot = guard.admit().await;
    let start = Instant::now();
    let (mut client, _task) = serve(&guard, slot, client, server);
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    closed(&mut client).await;
    assert_eq!(start.elapsed(), LIMITS.idle_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_after_100_continue_is_not_cut() {
    // hyper writes `100 Continue` while the body is being read: that write is not the answer,
    // so the connection is neither idle (its 30 s here would cut the minute-long handler) nor
    // still reading once the body is in.
    let guard = Guard::new(Limits {
        idle_timeout: Duration::from_secs(30),
        ..LIMITS
    });
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(
            b"POST /slow HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
        )
        .await
        .expect("writing");
    let mut buf = [0u8; 25];
    client.read_exact(&mut buf).await.expect("reading");
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"abcd").await.expect("writing");
    assert_eq!(
        answer(&mut client).await,
        ("HTTP/1.1 200 OK".to_owned(), "4".to_owned())
    );
    // Then idle, for the idle timeout.
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_is_not_cut_when_its_body_came_before_100_continue_went_out() {
    // The client sends its body without waiting for `100 Continue` (curl does after a second):
    // the body is read whole before hyper writes the `100 Continue`, which is then written
    // while the request is served, and must not be taken for the answer.
    let guard = Guard::new(Limits {
        idle_timeout: Duration::from_secs(30),
        ..LIMITS
    });
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(
            b"POST /read-then-slow HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\
              content-length: 4\r\n\r\nabcd",
        )
        .await
        .expect("writing");
    let mut buf = [0u8; 25];
    client.read_exact(&mut buf).await.expect("reading");
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(
        answer(&mut client).await,
        ("HTTP/1.1 200 OK".to_owned(), "4".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn the_next_head_on_a_keep_alive_connection_gets_the_read_timeout_from_its_first_byte() {
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    answer(&mut client).await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    client.write_all(b"GET / HT").await.expect("writing");
    let started = Instant::now();
    closed(&mut client).await;
    assert_eq!(started.elapsed(), LIMITS.read_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_handler_may_take_longer_than_the_read_timeout() {
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_trickles_in_is_cut_at_the_read_timeout() {
    let guard = Guard::new(LIMITS);
    let (client, task) = open(&guard).await;
    let (mut reader, mut writer) = tokio::io::split(client);
    writer
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123")
        .await
        .expect("writing");
    let start = Instant::now();
    // A byte a second: each in time, the body not.
    let trickle = tokio::spawn(async move {
        for _ in 0..96 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 256];
    let mut answered = Vec::new();
    while let Ok(n @ 1..) = reader.read(&mut buf).await {
        answered.extend_from_slice(&buf[..n]);
    }
    // Answered by the handler, which saw why its body ended; then closed.
    let answered = String::from_utf8_lossy(&answered);
    assert!(
        answered.starts_with("HTTP/1.1 408 Request Timeout\r\n")
            && answered.ends_with("\r\n\r\nrequest body not received within 10s"),
        "{answered}"
    );
    assert_eq!(start.elapsed(), LIMITS.read_timeout);
    task.await.expect("the connection task").ok();
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_reads_its_body_late_is_not_cut_off() {
    let head = b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab";
    let pause = LIMITS.read_timeout / 2;
    assert_eq!(
        in_two_parts(&Guard::new(LIMITS), head, pause, b"cd").await,
        ("HTTP/1.1 200 OK".to_owned(), "4".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_unread_ends_the_read() {
    // Half a body, which the handler drops: the request is served, not read, from then on (hyper
    // also stops reading a dropped body; the drop ends the read even if it did not).
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"POST /ignore HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
        .await
        .expect("writing");
    assert_eq!(
        answer(&mut client).await,
        ("HTTP/1.1 200 OK".to_owned(), "ignored".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_sent_in_time_in_pieces_is_read_whole() {
    let head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\n\r\nabcd";
    let pause = LIMITS.read_timeout / 2;
    assert_eq!(
        in_two_parts(&Guard::new(LIMITS), head, pause, b"efgh").await,
        ("HTTP/1.1 200 OK".to_owned(), "8".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_cap_wait_for_a_slot() {
    let guard = Guard::new(Limits {
        max_connections: 1,
        ..LIMITS
    });
    let (mut first, task) = open(&guard).await;
    assert_eq!(guard.open_connections(), 1);
    assert!(
        guard.try_admit().is_none(),
        "a second slot under a cap of 1"
    );
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "admitted over the cap");
    // The first connection ends (the client hangs up): its slot goes to the waiting one.
    first.shutdown().await.expect("closing");
    drop(first);
    let _ = task.await;
    let slot = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting connection was not admitted")
        .expect("admit");
    assert_eq!(guard.open_connections(), 1);
    drop(slot);
    assert_eq!(guard.open_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_acceptor_refuses_a_connection_over_the_cap() {
    use axum_server::accept::Accept as _;

    let guard = Guard::new(Limits {
        max_connections: 1,
        ..LIMITS
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding");
    let addr = listener.local_addr().expect("address");
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        accepted.push((_client, guard.accept(stream, ()).await));
    }
    assert!(accepted[0].1.is_ok(), "the first connection was refused");
    let refused = accepted[1].1.as_ref().err().map(ToString::to_string);
    assert_eq!(refused.as_deref(), Some("connection limit reached"));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_holds_when_the_task_has_spent_its_budget() {
    // tokio's timer answers `Pending` without registering when the task's cooperative budget
    // is spent; the deadline's timer is polled outside it.
    let guard = Guard::new(LIMITS);
    let (_client, server) = tokio::io::duplex(1024);
    let slot = guard.try_admit().expect("a slot");
    let (mut io, _service) = guard.open(server, (), slot);
    let start = Instant::now();
    let mut first = true;
    let read = std::future::poll_fn(|cx| {
        if std::mem::take(&mut first) {
            while let std::task::Poll::Ready(spent) = tokio::task::coop::poll_proceed(cx) {
                spent.made_progress();
            }
        }
        let mut b = [0u8; 16];
        let mut buf = tokio::io::ReadBuf::new(&mut b);
        Pin::new(&mut io).poll_read(cx, &mut buf)
    });
    let ended = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the read deadline never fired");
    assert_eq!(
        ended.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::TimedOut)
    );
    assert_eq!(start.elapsed(), LIMITS.read_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_next_head_that_arrives_while_serving_gets_the_read_timeout_not_the_idle_one() {
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    // While the minute-long request is served: the start of a next one, never finished.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.write_all(b"GET / HT").await.expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.read_timeout);
}

#[tokio::test(start_paused = true)]
async fn while_the_cap_is_reached_an_answered_connection_waits_only_the_read_timeout() {
    let guard = Guard::new(Limits {
        max_connections: 1,
        ..LIMITS
    });
    let (mut client, _task) = open(&guard).await;
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.read_timeout);
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting connection was not admitted")
        .expect("admit");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_outlives_its_answer_leaves_the_connection_bounded() {
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"POST /detach HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd")
        .await
        .expect("writing");
    let start = Instant::now();
    assert_eq!(answer(&mut client).await.1, "detached");
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A slow head after it: bounded by the deadlines, not held forever.
    let _ = client.write_all(b"GET / HT").await;
    closed(&mut client).await;
    assert!(
        start.elapsed() <= LIMITS.read_timeout * 2,
        "held for {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_client_does_not_take_is_dropped_after_the_read_timeout() {
    // A pipe of 64 bytes: the answer cannot go out while the client reads nothing.
    let guard = Guard::new(LIMITS);
    let (client, server) = tokio::io::duplex(64);
    let slot = guard.admit().await;
    let (mut client, task) = serve(&guard, slot, client, server);
    let body = "x".repeat(1000);
    client
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("writing");
    // The answer ("1000") fits; ask for many, never read.
    for _ in 0..64 {
        if tokio::time::timeout(
            Duration::from_millis(10),
            client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3600), task)
        .await
        .expect("a connection whose answers are not taken stayed open")
        .expect("the connection task");
    assert!(
        ended.as_ref().is_err_and(|e| e.contains("TimedOut")),
        "{ended:?}"
    );
    assert!(
        start.elapsed() <= LIMITS.read_timeout,
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn once_the_cap_frees_up_answered_connections_wait_the_idle_timeout_again() {
    // A connection waited for a slot and has been served and gone: the cap is no longer
    // reached, so an answer leaves the whole idle timeout again.
    let guard = Guard::new(Limits {
        max_connections: 2,
        ..LIMITS
    });
    let (mut client, _task) = open(&guard).await;
    let other = guard.admit().await;
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(other);
    let admitted = waiting.await.expect("admit");
    drop(admitted);
    assert_eq!(guard.open_connections(), 1);
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.idle_timeout);
}

/// Opens a connection, has one request answered on it, and returns it idle.
async fn answered(guard: &Guard) -> DuplexStream {
    let (mut client, _task) = open(guard).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    client
}

fn closed_for(guard: &Guard, reason: &'static str) -> u64 {
    guard
        .metrics
        .closed
        .get_or_create(&CloseReason { reason })
        .get()
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_longer_than_the_read_timeout_makes_room_for_a_waiting_one() {
    let guard = Guard::new(Limits {
        max_connections: 2,
        ..LIMITS
    });
    // Answered while a slot was free: it may idle for the whole idle timeout...
    let mut idle = answered(&guard).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let _other = guard.admit().await;
    // ... until a connection has to wait for a slot.
    let start = Instant::now();
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    closed(&mut idle).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting connection was not admitted")
        .expect("admit");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(closed_for(&guard, "evicted"), 1);
    assert_eq!(closed_for(&guard, "idle_timeout"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_for_less_than_the_read_timeout_is_closed_when_it_has_idled_that_long() {
    let guard = Guard::new(Limits {
        max_connections: 2,
        ..LIMITS
    });
    let mut idle = answered(&guard).await;
    let went_idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _other = guard.admit().await;
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    closed(&mut idle).await;
    assert_eq!(went_idle.elapsed(), LIMITS.read_timeout);
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting connection was not admitted")
        .expect("admit");
}

#[tokio::test(start_paused = true)]
async fn a_request_being_served_is_not_cut_when_the_cap_is_reached() {
    let guard = Guard::new(Limits {
        max_connections: 2,
        ..LIMITS
    });
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _other = guard.admit().await;
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    // The minute-long request is answered, then (the cap still reached) the connection waits
    // the read timeout for its next one.
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.read_timeout);
    waiting.await.expect("admit");
}

#[tokio::test(start_paused = true)]
async fn a_pressed_connection_that_is_used_again_idles_the_idle_timeout_once_room_is_made() {
    let guard = Guard::new(Limits {
        max_connections: 2,
        ..LIMITS
    });
    let mut client = answered(&guard).await;
    let other = guard.admit().await;
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Room is made elsewhere before its cut idle time runs out, and it is used again.
    drop(other);
    drop(waiting.await.expect("admit"));
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.idle_timeout);
    assert_eq!(closed_for(&guard, "idle_timeout"), 1);
    assert_eq!(closed_for(&guard, "evicted"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_refused_by_the_acceptor_makes_room_for_the_next() {
    use axum_server::accept::Accept as _;

    let guard = Guard::new(Limits {
        max_connections: 2,
        ..LIMITS
    });
    let mut idle = answered(&guard).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let _other = guard.admit().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding");
    let _client = tokio::net::TcpStream::connect(listener.local_addr().expect("address"))
        .await
        .expect("connect");
    let (stream, _) = listener.accept().await.expect("accept");
    let start = Instant::now();
    assert!(
        guard.accept(stream, ()).await.is_err(),
        "admitted over the cap"
    );
    closed(&mut idle).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(guard.try_admit().is_some(), "no room made");
}

#[tokio::test(start_paused = true)]
async fn every_slot_and_the_open_gauge_come_back_however_connections_end() {
    let guard = Guard::new(Limits {
        max_connections: 3,
        ..LIMITS
    });
    // Cut by the read deadline.
    let (_silent, silent) = open(&guard).await;
    // Closed by its client after an answer.
    let mut gone = answered(&guard).await;
    // Answered, then idle while the cap is reached: evicted.
    let mut idle = answered(&guard).await;
    assert_eq!(guard.metrics.open.get(), 3);
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.admit().await }
    });
    gone.shutdown().await.expect("closing");
    drop(gone);
    closed(&mut idle).await;
    drop(idle);
    let _ = silent.await;
    let admitted = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiting connection was not admitted")
        .expect("admit");
    drop(admitted);
    // The connections' tasks end (and drop their I/O) once they have seen the close.
    tokio::time::timeout(Duration::from_secs(60), async {
        while guard.open_connections() > 0 || guard.metrics.open.get() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a slot or the open gauge was not given back");
    assert!(guard.open.connections().is_empty(), "left in the registry");
    assert_eq!(closed_for(&guard, "read_timeout"), 1);
    assert_eq!(closed_for(&guard, "evicted"), 1);
}

// Real sockets on 127.0.0.1 and the real clock, with short deadlines (and a bound on every
// wait): what hyper reads and writes in one go, and what the kernel's buffers hold, as a server
// sees them.

/// The real-socket tests' deadlines: short, with room for a loaded machine around them.
const REAL: Limits = Limits {
    read_timeout: Duration::from_millis(300),
    idle_timeout: Duration::from_secs(30),
    max_connections: 8,
};

/// The size of `/big`'s answer: much more than a slow reader takes in the tests' time.
const BIG: usize = 2 * 1024 * 1024;

type Answer = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

/// Answers `200 <body length>`; `/hold` hands its body to a task that drops it 100 ms later
/// and answers at once; `/stream` answers 8 chunks 250 ms apart; `/big` answers [`BIG`] bytes.
async fn real_handle(req: Request<Deadlined<Incoming>>) -> Result<Answer, Infallible> {
    let text = |t: &'static str| Response::new(Full::new(Bytes::from_static(t.as_bytes())).boxed());
    Ok(match req.uri().path() {
        "/hold" => {
            let body = req.into_body();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(body);
            });
            text("held")
        }
        "/stream" => Response::new(Trickle::new(8, Duration::from_millis(250)).boxed()),
        "/big" => Response::new(Full::new(Bytes::from(vec![b'x'; BIG])).boxed()),
        _ => {
            let length = req.into_body().collect().await.map(|b| b.to_bytes().len());
            Response::new(Full::new(Bytes::from(format!("{length:?}"))).boxed())
        }
    })
}

/// A streamed answer's body: `left` chunks, `every` apart.
struct Trickle {
    left: u32,
    every: Duration,
    next: Pin<Box<tokio::time::Sleep>>,
}

impl Trickle {
    fn new(chunks: u32, every: Duration) -> Self {
        Self {
            left: chunks,
            every,
            next: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        ready!(self.next.as_mut().poll(cx));
        self.left -= 1;
        let next = Instant::now() + self.every;
        self.next.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk\n")))))
    }
}

/// A server accepting on a real socket, as the federation's own loop does (hyper-util,
/// HTTP/1.1 only, under the guard); it stops accepting when dropped.
struct TcpServer {
    addr: std::net::SocketAddr,
    accepting: JoinHandle<()>,
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// A listener on 127.0.0.1, its connections' send buffer set to `send_buffer` bytes if given
/// (accepted sockets take the listener's).
fn listener(send_buffer: Option<u32>) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    if let Some(size) = send_buffer {
        socket
            .set_send_buffer_size(size)
            .expect("a send buffer size");
    }
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("binding");
    socket.listen(64).expect("listening")
}

fn serve_tcp<S>(guard: &Guard, listener: tokio::net::TcpListener, service: S) -> TcpServer
where
    S: tower::Service<Request<Deadlined<Incoming>>, Response = Answer, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let addr = listener.local_addr().expect("an address");
    let guard = guard.clone();
    let accepting = tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        loop {
            let slot = guard.admit().await;
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let (io, service) = guard.open(stream, service.clone(), slot);
            let conn = builder
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    TcpServer { addr, accepting }
}

/// A client connection to `addr`, its receive buffer set to `recv_buffer` bytes if given.
async fn dial(addr: std::net::SocketAddr, recv_buffer: Option<u32>) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .expect("a receive buffer size");
    }
    let stream = socket.connect(addr).await.expect("connecting");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// How long the server took to close `client` (reading and dropping what it sends), or
/// `None` if it was still open after `limit`.
async fn closed_within(client: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        while client.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

#[tokio::test]
async fn a_partial_head_sent_with_the_request_before_it_gets_the_read_timeout_not_the_idle_one() {
    // The start of a next request in the same packet as the one answered: hyper holds it in its
    // buffer, and the I/O never sees it arrive; it must not wait like an idle connection.
    let guard = Guard::new(REAL);
    let server = serve_tcp(&guard, listener(None), tower::service_fn(real_handle));
    let mut client = dial(server.addr, None).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HT")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
    let took = closed_within(&mut client, REAL.read_timeout * 10).await;
    assert!(
        took.is_some(),
        "a partial head waited as an idle connection would"
    );
    assert_eq!(closed_for(&guard, "read_timeout"), 1);
}

#[tokio::test]
async fn a_small_body_that_outlives_its_answer_leaves_the_connection_idle() {
    // hyper has read the small body with the head; the handler hands it to a task that drops it
    // after the answer. The connection is kept, and waits for its next request as an idle one,
    // not under the read deadline.
    let guard = Guard::new(REAL);
    let server = serve_tcp(&guard, listener(None), tower::service_fn(real_handle));
    let mut client = dial(server.addr, None).await;
    client
        .write_all(b"POST /hold HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.1, "held");
    tokio::time::sleep(REAL.read_timeout * 3).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing the next request");
    let next = tokio::time::timeout(Duration::from_secs(5), answer(&mut client)).await;
    assert_eq!(
        next.expect("no answer to the next request").0,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(closed_for(&guard, "read_timeout"), 0);
}

#[tokio::test]
async fn a_streamed_answer_longer_than_the_idle_timeout_is_served_whole() {
    // 8 chunks 250 ms apart: 2 s, twice the idle timeout. The request is served until the
    // answer's end, not idle from its first write.
    let guard = Guard::new(Limits {
        idle_timeout: Duration::from_secs(1),
        ..REAL
    });
    let server = serve_tcp(&guard, listener(None), tower::service_fn(real_handle));
    let mut client = dial(server.addr, None).await;
    client
        .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            match client.read(&mut buf).await {
                Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(read.is_ok(), "the answer never ended: {text}");
    assert_eq!(text.matches("chunk\n").count(), 8, "{text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "cut short: {text}");
    // Then idle, and used again.
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(answer(&mut client).await.0, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_client_taking_a_large_answer_slowly_cannot_stretch_it_past_the_read_timeout() {
    // Small socket buffers and a client reading 4 KiB every 50 ms: every write makes progress,
    // but the whole answer would take half a minute.
    let guard = Guard::new(REAL);
    let server = serve_tcp(
        &guard,
        listener(Some(8 * 1024)),
        tower::service_fn(real_handle),
    );
    let mut client = dial(server.addr, Some(8 * 1024)).await;
    client
        .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    let start = Instant::now();
    let mut got = 0;
    let mut buf = vec![0u8; 4096];
    let ended = loop {
        if start.elapsed() > Duration::from_secs(8) {
            break false;
        }
        match tokio::time::timeout(Duration::from_secs(1), client.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got += n,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        ended,
        "a slow reader held its answer for {:?} ({got} of {BIG} bytes)",
        start.elapsed()
    );
    assert!(got < BIG, "the whole answer went out ({got} bytes)");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(closed_for(&guard, "write_timeout"), 1);
}

/// The phases of `guard`'s open connections.
fn phases(guard: &Guard) -> Vec<u8> {
    guard
        .open
        .connections()
        .values()
        .map(|shared| phase_of(shared.state.load(Ordering::Relaxed)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dropped_on_another_thread_as_its_answer_goes_out_leaves_the_connection_bounded() {
    // The handler hands its body to a thread that drops it a little after the handler has
    // answered, the delay swept across the time hyper takes to write the answer: some drops
    // land while the answer goes out. Once each answer is out and its body dropped, the
    // connection must be idle or reading (with a deadline), never left served.
    type Handed = (Deadlined<Incoming>, Arc<AtomicBool>, u32);
    let (to_dropper, bodies) = std::sync::mpsc::channel::<Handed>();
    let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel::<()>();
    let dropper = std::thread::spawn(move || {
        for (body, answered, spins) in bodies {
            while !answered.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            for _ in 0..spins {
                std::hint::spin_loop();
            }
            drop(body);
            if dropped_tx.send(()).is_err() {
                return;
            }
        }
    });
    let count = Arc::new(AtomicU64::new(0));
    let service = tower::service_fn(move |req: Request<Deadlined<Incoming>>| {
        let to_dropper = to_dropper.clone();
        let count = count.clone();
        async move {
            let answered = Arc::new(AtomicBool::new(false));
            let spins = (count.fetch_add(1, Ordering::Relaxed) % 1500) as u32;
            let _ = to_dropper.send((req.into_body(), answered.clone(), spins));
            answered.store(true, Ordering::Release);
            Ok::<_, Infallible>(Response::new(
                Full::new(Bytes::from_static(b"handed")).boxed(),
            ))
        }
    });
    let guard = Guard::new(REAL);
    let server = serve_tcp(&guard, listener(None), service);
    let mut client = dial(server.addr, None).await;
    for i in 0..10000 {
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd")
            .await
            .expect("writing");
        assert_eq!(answer(&mut client).await.1, "handed");
        tokio::time::timeout(Duration::from_secs(5), dropped.recv())
            .await
            .expect("the body was never dropped")
            .expect("the dropper ended");
        // The server's task may still be flushing: bounded.
        let start = Instant::now();
        loop {
            let now = phases(&guard);
            if now.iter().all(|p| matches!(*p, IDLE | HEAD)) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "request {i}: left in phases {now:?} once answered"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(server);
    drop(client);
    drop(dropped);
    let _ = dropper;
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_body_came_after_its_head_then_waits_the_idle_timeout() {
    // hyper read the body after the head, then found nothing more: nothing of a next request
    // waits in its buffer.
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\n\r\nabcd")
        .await
        .expect("writing");
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.write_all(b"efgh").await.expect("writing");
    assert_eq!(answer(&mut client).await.1, "8");
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.idle_timeout);
}

#[tokio::test(start_paused = true)]
async fn an_empty_answer_leaves_the_connection_idle() {
    // hyper drops an empty body before it writes anything of the answer.
    let guard = Guard::new(LIMITS);
    let (mut client, _task) = open(&guard).await;
    client
        .write_all(b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("writing");
    assert_eq!(
        answer(&mut client).await,
        ("HTTP/1.1 200 OK".to_owned(), String::new())
    );
    let answered = Instant::now();
    closed(&mut client).await;
    assert_eq!(answered.elapsed(), LIMITS.idle_timeout);
}
