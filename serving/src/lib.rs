//! What the esi servers (the federation and the webhook) do to every connection they accept,
//! whether hyper-util serves it directly or axum-server over TLS:
//!
//! - **a read deadline**: a request's head must be complete within [`Limits::read_timeout`] of
//!   its first byte (of the accept, for a connection's first request, so a TLS handshake counts),
//!   and its body within the same time of the first wait for it; a slower client is cut off
//!   (a body being read ends with [`BodyTimedOut`], which the handler may still answer, say
//!   with a `408`, and the connection is closed);
//! - **a write deadline**: what the server has to send at once (an answer, or what a streamed
//!   answer has ready) must all go out within the read timeout of the first write that could
//!   not, however slowly the client takes it (a deadline restarted by every write that makes
//!   progress would let a client reading a byte at a time stretch an answer forever);
//! - **an idle deadline**: a keep-alive connection with no request under way is closed after
//!   [`Limits::idle_timeout`];
//! - **a cap**: at most [`Limits::max_connections`] connections are open at once.
//!
//! Without them one client can hold a task and a file descriptor per connection for as long as
//! it likes (slowloris), until the server can accept nobody else.
//!
//! hyper's own `header_read_timeout` starts when hyper begins to wait for a request, so on a
//! keep-alive connection it is the idle timeout too: short enough for slow clients, it closes
//! idle connections a load balancer (AWS ALB 60 s, Google's 600 s, Envoy 1 h) or the Kubernetes
//! API server (90 s) still holds, and a request sent on one just as it closes fails (a 502, a
//! failed admission). The two deadlines are separate here, as Go's `ReadHeaderTimeout` and
//! `IdleTimeout` are, and the idle one defaults to longer than those peers keep connections.
//!
//! How: [`Watched`] wraps a connection's I/O, [`Marked`] its service, [`Deadlined`] each
//! request's body and [`AnswerBody`] each answer's body. They share the connection's phase,
//! kept in one word with the number of the request it is for, so that a body ending late on
//! another task cannot move a later request on: reading a request's head or body (deadline:
//! the read timeout), serving it (no deadline: the handler bounds its own time, a streamed
//! answer's too), idle (deadline: the idle timeout). The service side moves a request to
//! serving when hyper hands it on with its body already in, else when the body ends or is
//! dropped unread (only while it is still being read: a body that outlives its answer changes
//! nothing). hyper drops an answer's body once it has all of it, and the I/O moves the
//! connection on at the flush that sends the rest: to idle, or to reading the next request's
//! head if hyper may already hold some of it. Once a request's head is in, hyper reads the
//! connection only when its own buffer is empty (for the body, or to notice the client gone),
//! and the read that completes a head brings bytes: so if the last read found nothing, no next
//! request waits in that buffer; otherwise (bytes of one pipelined while the request was
//! served, or sent in the same packet) the next head's read deadline starts when the answer
//! has gone out. A deadline is looked at only when the I/O has to wait (or a write cannot go
//! out), with the connection's one timer, moved only when a deadline falls before it:
//! a request that arrives whole reads no clock and arms no timer, and a body costs no timer of
//! its own.
//!
//! HTTP/1.1 only: an HTTP/2 connection multiplexes requests whose phases this tracking cannot
//! tell apart, so the servers offer no `h2` in ALPN and serve no HTTP/2 with prior knowledge
//! (their clients, esi-cli, load balancers and the API server, speak HTTP/1.1). hyper's
//! `half_close` must stay off (its default): with it, hyper never reads while a request is
//! under way, and every answer would be followed by a read deadline instead of the idle one.
//!
//! Also bounded: while the cap is reached, no connection waits idle longer than the read
//! timeout, so idle connections make room for waiting ones: one answered meanwhile gets only
//! that long for its next request, and when a connection is turned away or kept waiting, those
//! already idle are woken to have their idle time cut to it (those idle that long already are
//! closed at once). What nginx does with keep-alive connections when it runs out of them,
//! without closing a connection that has only just been answered.
//!
//! What the I/O cannot see: bytes held by rustls. Part of a TLS record sent in the same packet
//! as a request waits as an idle connection would (no longer than one that sent nothing). And
//! when a handler answers before its request's body has been read and reads it afterwards,
//! what hyper then still reads of that body is taken for the next request: it and the request
//! after it are held to one read deadline from the answer (or from their first byte, if the
//! connection was idle), which may close the connection sooner than its idle time would.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The deadlines and the cap, as the servers' flags set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's head, and then its body; and to take
    /// what the server has to send at once (an answer), from the first write that could not go
    /// out.
    pub read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How many connections may be open at once.
    pub max_connections: usize,
}

impl Limits {
    /// 10 s to send a request; an hour idle, longer than the load balancers and the API server
    /// in front keep an idle connection (so they always close it first); 2,048 connections, at
    /// ~20–50 KB each (hyper's buffers, rustls' with TLS) ~100 MB at most.
    pub const DEFAULT: Limits = Limits {
        read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3600),
        max_connections: 2048,
    };
}

/// Why a connection was closed by the guard or refused, the label of
/// `<prefix>_connections_closed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CloseReason {
    /// `read_timeout`, `idle_timeout`, `write_timeout`, `evicted` (idle for the read timeout
    /// while the cap was reached) or `refused` (over the cap).
    pub reason: &'static str,
}

/// The guard's metrics, registered in a server's registry (see [`ConnectionMetrics::register`]).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: prometheus_client::metrics::gauge::Gauge,
    closed: prometheus_client::metrics::family::Family<
        CloseReason,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl ConnectionMetrics {
    /// Registers `connections_open` and `connections_closed` (under the registry's prefix).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "connections_open",
            "Connections open now (under --max-connections)",
            self.open.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by a deadline (read_timeout, idle_timeout, write_timeout), \
             closed idle to make room while the cap was reached (evicted), or refused over the \
             cap (refused)",
            self.closed.clone(),
        );
    }

    fn count(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseReason { reason }).inc();
    }
}

/// Reads a `--max-connections` flag: a whole number from 1 up.
pub fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Resolves when the server is asked to stop (SIGTERM or SIGINT), `delay` later: the time to
/// keep serving while load balancers and kube-proxy stop sending new connections here (a
/// Kubernetes endpoint's removal takes a few seconds to spread, and a connection refused
/// meanwhile is not retried). What a `preStop` sleep does, without needing one.
pub async fn stop_requested(delay: Duration) {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    if !delay.is_zero() {
        tracing::info!(
            delay = ?delay,
            "asked to stop: serving on while load balancers stop sending here"
        );
        tokio::time::sleep(delay).await;
    }
}

/// The phases of a connection (see the crate's documentation). Reading a request's head (the
/// read deadline), of the first request from the accept, of a next one from its first byte or,
/// when hyper may already hold some of it, from the answer before it.
const HEAD: u8 = 0;
/// Reading the body of the request handed on (the read deadline, afresh).
const BODY: u8 = 1;
/// The request is served (no deadline).
const SERVING: u8 = 2;
/// hyper has all of the answer (it dropped its body): the connection moves on at its flush.
const ANSWERED: u8 = 3;
/// Waiting for a next request (the idle deadline).
const IDLE: u8 = 4;
/// HTTP/2: untracked (see the crate's documentation).
const MULTIPLEXED: u8 = 5;

/// A connection's state word: its phase and the request (the count of requests handed to the
/// service) the phase is for.
fn state(call: u32, phase: u8) -> u64 {
    (u64::from(call) << 8) | u64::from(phase)
}

/// The phase in a state word.
fn phase_of(state: u64) -> u8 {
    (state & 0xff) as u8
}

/// The request in a state word.
fn call_of(state: u64) -> u32 {
    (state >> 8) as u32
}

/// What a connection's I/O, service, request bodies and answer bodies share.
#[derive(Debug)]
struct Shared {
    /// The phase and its request ([`state`]), in one word: a change made on another task (a
    /// body ending) is a compare-and-swap from that request's own phase, so it cannot land on a
    /// later request, nor after the answer. Only the connection's task changes it otherwise.
    state: AtomicU64,
    /// Set when the read deadline closed the connection, so the body being read says why.
    timed_out: AtomicBool,
    read_timeout: Duration,
    /// Set by the guard when the cap is reached while the connection is idle: its idle time is
    /// then cut to the read timeout.
    pressed: AtomicBool,
    /// The connection's task, to wake when pressed (registered once it first waits idle).
    waker: Mutex<Option<Waker>>,
}

/// Applies [`Limits`] to the connections of one server: admits them under the cap and wraps
/// each one's I/O and service. Cheap to clone; clones share the cap.
///
/// It is also an axum-server acceptor (below TLS: `RustlsAcceptor::acceptor(guard)`), which
/// refuses a connection at once when the cap is reached, instead of holding its socket while it
/// waits; [`Guard::admit`], for a server's own accept loop, waits before accepting, so the
/// connections over the cap wait in the kernel's listen backlog.
#[derive(Clone, Debug)]
pub struct Guard {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Set while connections are turned away or kept waiting, so that is logged once per episode.
    full: Arc<AtomicBool>,
    /// The open connections, to find the idle ones when the cap is reached.
    open: Arc<Registry>,
    metrics: ConnectionMetrics,
}

/// The open connections' shared state, by a number given at open.
#[derive(Debug, Default)]
struct Registry {
    next: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Shared>>>,
}

impl Registry {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Shared>>> {
        // Nothing is left half-done under this lock: a panic elsewhere does not spoil it.
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place under the cap, given back when the connection ends.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Guard {
    /// A guard applying `limits` (a cap of 0 is taken as 1).
    pub fn new(limits: Limits) -> Self {
        let cap = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            limits: Limits {
                max_connections: cap,
                ..limits
            },
            slots: Arc::new(Semaphore::new(cap)),
            full: Arc::new(AtomicBool::new(false)),
            open: Arc::default(),
            metrics: ConnectionMetrics::default(),
        }
    }

    /// The same guard, counting into `metrics` (registered by the server).
    #[must_use]
    pub fn with_metrics(mut self, metrics: ConnectionMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The limits applied.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.slots.available_permits()
    }

    /// A slot for the next connection, waiting while the cap is reached.
    pub async fn admit(&self) -> Slot {
        if let Some(slot) = self.try_admit() {
            return slot;
        }
        self.saturated("new connections wait");
        // The semaphore is never closed, so acquiring only waits.
        loop {
            if let Ok(permit) = self.slots.clone().acquire_owned().await {
                return Slot(permit);
            }
        }
    }

    /// A slot for the next connection, if the cap is not reached.
    pub fn try_admit(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.full.store(false, Ordering::Relaxed);
        Some(Slot(permit))
    }

    /// The cap is reached and a connection is kept waiting or turned away: once per episode
    /// (until a connection is admitted at once again), logged, and the idle connections are
    /// pressed to make room. Connections that go idle later in the episode find no slot free
    /// and take the read timeout themselves (see [`Watched::went_out`]), so one scan is enough:
    /// a flood of refused connections does not scan the open ones each time.
    fn saturated(&self, what: &str) {
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                "connection limit reached: {what}"
            );
            self.press_idle();
        }
    }

    /// Wakes every idle connection not yet pressed, to cut its idle time to the read timeout
    /// (see [`Watched::wait`]): a scan of the open connections.
    fn press_idle(&self) {
        // No slot was found free: the fence pairs with the one between a connection marking
        // itself idle and reading the free slots (see `Watched::went_out`).
        std::sync::atomic::fence(Ordering::SeqCst);
        for shared in self.open.connections().values() {
            if phase_of(shared.state.load(Ordering::Relaxed)) == IDLE
                && !shared.pressed.swap(true, Ordering::Relaxed)
            {
                let waker = shared.waker.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(waker) = &*waker {
                    waker.wake_by_ref();
                }
            }
        }
    }

    /// Wraps a connection just accepted: its I/O and its service, bound by the limits from now.
    pub fn open<IO, S>(&self, io: IO, service: S, slot: Slot) -> (Watched<IO>, Marked<S>) {
        self.metrics.open.inc();
        let shared = Arc::new(Shared {
            state: AtomicU64::new(state(0, HEAD)),
            timed_out: AtomicBool::new(false),
            read_timeout: self.limits.read_timeout,
            pressed: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        let id = self.open.next.fetch_add(1, Ordering::Relaxed);
        self.open.connections().insert(id, shared.clone());
        let watched = Watched {
            io,
            shared: shared.clone(),
            limits: self.limits,
            deadline: Deadline::after(self.limits.read_timeout),
            deadline_for: state(0, HEAD),
            quiet: false,
            write_deadline: None,
            slots: self.slots.clone(),
            metrics: self.metrics.clone(),
            ended: false,
            timer: None,
            waker: None,
            registered: None,
            evicting: false,
            open: self.open.clone(),
            id,
            _slot: slot,
        };
        let marked = Marked {
            inner: service,
            shared,
        };
        (watched, marked)
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<tokio::net::TcpStream, S> for Guard {
    type Stream = Watched<tokio::net::TcpStream>;
    type Service = Marked<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let Some(slot) = self.try_admit() else {
            self.metrics.count("refused");
            self.saturated("new connections are refused");
            return std::future::ready(Err(io::Error::other("connection limit reached")));
        };
        // Requests and answers are small: do not hold them back (Nagle).
        let _ = stream.set_nodelay(true);
        std::future::ready(Ok(self.open(stream, service, slot)))
    }
}

/// When the current phase's deadline falls.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    /// Not yet looked at in this phase: set from the clock the first time the I/O waits.
    Unset,
    At(Instant),
    /// Further away than the clock can count.
    Never,
}

impl Deadline {
    fn after(limit: Duration) -> Self {
        Instant::now()
            .checked_add(limit)
            .map_or(Deadline::Never, Deadline::At)
    }
}

/// A connection's I/O under the deadlines, holding its [`Slot`] until it is dropped.
#[derive(Debug)]
pub struct Watched<IO> {
    io: IO,
    shared: Arc<Shared>,
    limits: Limits,
    /// The deadline of the phase, and the state word (phase and request) it was set for:
    /// another state gets its own.
    deadline: Deadline,
    deadline_for: u64,
    /// The last read found nothing (no byte has been read since): once a request's head is in,
    /// hyper's buffer then holds nothing of a next request (see [`Watched::went_out`]).
    quiet: bool,
    /// When writes that cannot go out fail: the read timeout after the first one blocked, until
    /// a flush completes (all that hyper had to send has gone out).
    write_deadline: Option<Instant>,
    /// The guard's slots: none free means the cap is reached.
    slots: Arc<Semaphore>,
    metrics: ConnectionMetrics,
    /// A deadline closed it (counted once).
    ended: bool,
    timer: Option<Pin<Box<Sleep>>>,
    /// The task the timer wakes, as last registered.
    waker: Option<Waker>,
    /// The task the guard wakes to press an idle connection, as last registered in `shared`.
    registered: Option<Waker>,
    /// The idle deadline is the read timeout's, because the cap is reached: closing by it
    /// counts as `evicted`.
    evicting: bool,
    /// The guard's registry of open connections, and this one's number in it.
    open: Arc<Registry>,
    id: u64,
    _slot: Slot,
}

impl<IO> Watched<IO> {
    /// The wrapped I/O.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Bytes arrived: an idle connection is now reading a request's head, and hyper may hold
    /// some of a next request.
    fn arrived(&mut self) {
        self.quiet = false;
        let state = self.shared.state.load(Ordering::Relaxed);
        if phase_of(state) == IDLE {
            // Only this task moves an idle connection on (the guard only reads the phase): the
            // deadline is set at the next wait, from the state's change.
            self.shared
                .state
                .store(self::state(call_of(state), HEAD), Ordering::Relaxed);
        }
    }

    /// All of an answer has gone out (hyper flushed it after dropping its body): the connection
    /// is idle from now, or reading the next request's head if hyper may hold some of it
    /// already. The timer is armed here, not when the I/O next waits: hyper may already be
    /// waiting to read, and then nothing else would look at the deadline.
    ///
    /// Between a request's head and its answer's end, hyper reads the connection only when its
    /// own buffer is empty (for the body, or to notice the client gone), and the read that
    /// completes a head brings bytes: so if the last read found nothing, that buffer is empty.
    /// Otherwise bytes of a next request may wait in it (sent in the same packet as the one
    /// answered, or while it was served), which the I/O will not see arrive: their read
    /// deadline starts now.
    fn went_out(&mut self, cx: &mut Context<'_>, answered: u64) {
        let idle = self.quiet;
        let next = state(call_of(answered), if idle { IDLE } else { HEAD });
        // Only this task moves an answered connection on (a body's end changes only a body
        // being read).
        self.shared.state.store(next, Ordering::Relaxed);
        let limit = if idle {
            // Idle is marked before the free slots are read, with a fence between (as the
            // guard has between finding none free and its scan): either the guard's scan sees
            // this connection idle and presses it, or this read sees no slot free.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.slots.available_permits() == 0 {
                // Others wait for a slot: make room unless the next request comes soon.
                self.limits.idle_timeout.min(self.limits.read_timeout)
            } else {
                self.limits.idle_timeout
            }
        } else {
            self.limits.read_timeout
        };
        self.evicting = idle && limit < self.limits.idle_timeout;
        self.deadline = Deadline::after(limit);
        self.deadline_for = next;
        if let Deadline::At(at) = self.deadline {
            // In the future: this only arms the timer.
            let _ = self.expired(cx, at);
        }
    }

    /// A write cannot go out: `Pending` until the read timeout after the first write since the
    /// last complete flush blocked, then the error that ends the connection (a client that does
    /// not take its answer, or takes it too slowly). A write that makes progress does not move
    /// the deadline: only a flush that completes, once all that hyper had to send is out.
    fn write_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limits.read_timeout;
        let deadline = match self.write_deadline {
            Some(at) => at,
            None => match Instant::now().checked_add(limit) {
                Some(at) => *self.write_deadline.insert(at),
                None => return Poll::Pending,
            },
        };
        ready!(self.expired(cx, deadline));
        self.ended("write_timeout");
        tracing::debug!(timeout = ?limit, "closing a connection: its answer was not taken");
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("answer not taken within {limit:?}"),
        ))
    }

    /// The I/O has to wait: `Pending` (with the timer armed for the phase's deadline, if it has
    /// one), or the error that ends the connection once the deadline has passed.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // Once a request's head is in, hyper's buffer is empty (see `went_out`), and stays so
        // until a byte arrives.
        self.quiet = true;
        let state = self.shared.state.load(Ordering::Relaxed);
        let phase = phase_of(state);
        let limit = match phase {
            HEAD | BODY => self.limits.read_timeout,
            IDLE => {
                self.idle_pressed(cx);
                if self.evicting {
                    self.limits.read_timeout
                } else {
                    self.limits.idle_timeout
                }
            }
            // Serving (an answer not taken is the write deadline's), or untracked.
            _ => return Poll::Pending,
        };
        // A phase or request since the deadline was set: a head begun on an idle connection, or
        // the body of a request handed on, which gets the read timeout afresh.
        if state != self.deadline_for {
            self.deadline_for = state;
            self.deadline = Deadline::Unset;
        }
        if let Deadline::Unset = self.deadline {
            self.deadline = Deadline::after(limit);
        }
        let Deadline::At(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if self.expired(cx, deadline).is_pending() {
            return Poll::Pending;
        }
        let what = if phase != IDLE {
            self.shared.timed_out.store(true, Ordering::Relaxed);
            self.ended("read_timeout");
            "no complete request"
        } else if self.evicting {
            self.ended("evicted");
            "no request on an idle connection while the cap is reached"
        } else {
            self.ended("idle_timeout");
            "no request on an idle connection"
        };
        tracing::debug!(timeout = ?limit, "closing a connection: {what}");
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} within {limit:?}"),
        ))
    }

    /// Waiting idle: registers the task for the guard to wake (once; it stays the same), and
    /// if the guard has pressed the connection since while the cap is still reached, cuts the
    /// idle deadline to the read timeout after the connection went idle.
    ///
    /// The task is stored before `pressed` is read, and the guard sets `pressed` before it
    /// takes the task (under the same lock): one of the two sees the other.
    fn idle_pressed(&mut self, cx: &mut Context<'_>) {
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *self
                .shared
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
            self.registered = Some(waker);
        }
        if !self.shared.pressed.load(Ordering::Relaxed)
            || !self.shared.pressed.swap(false, Ordering::Relaxed)
            || self.evicting
            || self.slots.available_permits() > 0
            || self.limits.read_timeout >= self.limits.idle_timeout
        {
            return;
        }
        // The deadline was set to the idle timeout when the connection went idle (in
        // `went_out`): the read timeout after that is as much earlier as the two differ. One
        // already past closes the connection at once.
        let cut = self.limits.idle_timeout - self.limits.read_timeout;
        self.deadline = match self.deadline {
            Deadline::At(at) => Deadline::At(at.checked_sub(cut).unwrap_or_else(Instant::now)),
            Deadline::Unset | Deadline::Never => Deadline::after(self.limits.read_timeout),
        };
        self.evicting = true;
    }

    /// Counts the connection closed by a deadline, once.
    fn ended(&mut self, reason: &'static str) {
        if !std::mem::replace(&mut self.ended, true) {
            self.metrics.count(reason);
        }
    }

    /// `Ready` once `deadline` has passed, else `Pending` with the timer armed to wake the
    /// connection by then.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // A timer set for a later deadline would wake too late; one set for an earlier one
        // wakes early, and is moved on here.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
            self.waker = None;
        }
        // Polled again only when it could say something new: it has fired, or the task to wake
        // is another (a poll registers the waker again, a needless atomic round trip).
        if !timer.is_elapsed() && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        if poll_timer(timer.as_mut(), cx).is_ready() && Instant::now() >= deadline {
            return Poll::Ready(());
        }
        if timer.is_elapsed() {
            timer.as_mut().reset(deadline);
            ready!(poll_timer(timer.as_mut(), cx));
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<IO> Drop for Watched<IO> {
    fn drop(&mut self) {
        self.metrics.open.dec();
        self.open.connections().remove(&self.id);
    }
}

/// Polls `timer` outside the task's cooperative budget: with the budget spent, tokio's `Sleep`
/// answers `Pending` without registering anything, and a deadline would then never fire.
fn poll_timer(timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
    Pin::new(&mut tokio::task::coop::unconstrained(timer)).poll(cx)
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.wait(cx).map(Err),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.arrived();
                }
                Poll::Ready(Ok(()))
            }
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.write_blocked(cx).map(Err),
            done => done,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.write_blocked(cx).map(Err),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// hyper flushes once it has written all it had buffered (and so does rustls below it):
    /// the write deadline ends, and an answer whose body hyper has dropped is all out.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.write_blocked(cx).map(Err),
            done => {
                this.write_deadline = None;
                let state = this.shared.state.load(Ordering::Relaxed);
                if phase_of(state) == ANSWERED {
                    this.went_out(cx, state);
                }
                done
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A connection's service: marks when a request is being served, and wraps each request's
/// body to mark its end ([`Deadlined`]) and each answer's body to mark when hyper has all of
/// it ([`AnswerBody`]).
#[derive(Clone, Debug)]
pub struct Marked<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, A> tower_service::Service<Request<B>> for Marked<S>
where
    S: tower_service::Service<Request<Deadlined<B>>, Response = Response<A>>,
    B: Body,
{
    type Response = Response<AnswerBody<A>>;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        // Requests are handed on by the connection's task alone, which alone counts them
        // (hyper-util's service adapter clones the service for each, so the count is shared).
        let call = call_of(shared.state.load(Ordering::Relaxed)).wrapping_add(1);
        let (phase, mark) = if req.version() == Version::HTTP_2 {
            // Not offered by the servers (see the crate's documentation); untracked if served.
            (MULTIPLEXED, None)
        } else if req.body().is_end_stream() {
            (SERVING, None)
        } else {
            // Still reading: the body.
            let mark = BodyMark {
                shared: shared.clone(),
                call,
            };
            (BODY, Some(mark))
        };
        shared.state.store(state(call, phase), Ordering::Relaxed);
        let answer = (phase != MULTIPLEXED).then(|| AnswerMark {
            shared: shared.clone(),
            call,
        });
        Answered {
            inner: self.inner.call(req.map(|body| Deadlined::new(body, mark))),
            mark: answer,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer being made: its body is handed to hyper as an [`AnswerBody`].
    #[derive(Debug)]
    pub struct Answered<F> {
        #[pin]
        inner: F,
        mark: Option<AnswerMark>,
    }
}

impl<F, A, E> Future for Answered<F>
where
    F: Future<Output = Result<Response<A>, E>>,
{
    type Output = Result<Response<AnswerBody<A>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        let mark = this.mark.take();
        Poll::Ready(answer.map(|answer| answer.map(|body| AnswerBody { inner: body, mark })))
    }
}

pin_project_lite::pin_project! {
    /// An answer's body: hyper drops it once it has all of it (or gives up), after which the
    /// connection moves on when the rest goes out (see [`Watched`]). Until then the request is
    /// served, however long a streamed answer takes.
    #[derive(Debug)]
    pub struct AnswerBody<B> {
        #[pin]
        inner: B,
        mark: Option<AnswerMark>,
    }
}

impl<B: Body> Body for AnswerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The end of one request's answer (its body dropped by hyper).
#[derive(Debug)]
struct AnswerMark {
    shared: Arc<Shared>,
    call: u32,
}

impl Drop for AnswerMark {
    fn drop(&mut self) {
        // From the request's own body or service only (a compare-and-swap: its body may end on
        // another task meanwhile, moving it from one to the other).
        let state = &self.shared.state;
        let mut current = state.load(Ordering::Relaxed);
        while call_of(current) == self.call && matches!(phase_of(current), BODY | SERVING) {
            match state.compare_exchange_weak(
                current,
                self::state(self.call, ANSWERED),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }
}

/// The end of one request's body: the request is then served, no longer read.
#[derive(Debug)]
struct BodyMark {
    shared: Arc<Shared>,
    call: u32,
}

impl Drop for BodyMark {
    fn drop(&mut self) {
        // Only while its own request's body is being read. After the answer (a body handed to
        // another task, dropped late) it changes nothing: hyper then has read a small body
        // already, or reads what is left of it once (keeping the connection if that ends it),
        // or closes the connection; the answer moved it on, to idle or to the next head (see
        // `Watched::went_out`). Nor does it end a next request's read.
        let _ = self.shared.state.compare_exchange(
            state(self.call, BODY),
            state(self.call, SERVING),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// The error a request body ends with when the read deadline closed its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut {
    /// The read timeout.
    pub limit: Duration,
}

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body not received within {:?}", self.limit)
    }
}

impl std::error::Error for BodyTimedOut {}

/// The [`BodyTimedOut`] in `error` or what caused it, if that is why a body could not be read.
pub fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> Option<BodyTimedOut> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(timed_out) = e.downcast_ref::<BodyTimedOut>() {
            return Some(*timed_out);
        }
        current = e.source();
    }
    None
}

/// A boxed error, as bodies' errors are handed on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request body read under the read deadline: while its reader waits for it, the
    /// connection's I/O holds it to the read timeout (the body then ends with [`BodyTimedOut`],
    /// the handler may still answer, and the connection is closed), and its end, or its drop
    /// unread, ends the request's read.
    #[derive(Debug)]
    pub struct Deadlined<B> {
        #[pin]
        inner: B,
        mark: Option<BodyMark>,
    }
}

impl<B> Deadlined<B> {
    fn new(body: B, mark: Option<BodyMark>) -> Self {
        Self { inner: body, mark }
    }
}

impl<B> Body for Deadlined<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match frame {
            Some(Err(e)) => {
                let timed_out = this
                    .mark
                    .as_ref()
                    .filter(|m| m.shared.timed_out.load(Ordering::Relaxed))
                    .map(|m| m.shared.read_timeout);
                Poll::Ready(Some(Err(match timed_out {
                    Some(limit) => Box::new(BodyTimedOut { limit }),
                    None => e.into(),
                })))
            }
            Some(Ok(frame)) => {
                if this.inner.is_end_stream() {
                    this.mark.take();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.mark.take();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
