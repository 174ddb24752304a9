//! Connections with nothing to do are closed.
//!
//! A connection is idle when it has no request in flight and has moved no
//! byte either way for [`IDLE_TIME`]. Without a limit such connections
//! stay open for good: a client that connected and sent nothing, a pool's
//! spare HTTP/2 and gRPC connections, and above all the connections of
//! Lambda execution environments that were frozen and then destroyed,
//! which never send a FIN. Each holds a file descriptor; the process has a
//! few thousand, and the WAL, the flush and queries need theirs. (An
//! HTTP/1 connection kept alive after a request is closed sooner, by
//! hyper's header read timeout, see `serve::HEADER_TIME`.)
//!
//! [`IdleIo`] wraps a connection's socket: it notes the time of every
//! read and write in the connection's [`Activity`], and fails the
//! socket's next read or write (which the HTTP layer then closes) once the
//! connection has been idle long enough. Requests count themselves in
//! flight through [`Activity::begin`] (the HTTP ports in their service,
//! gRPC through [`InFlightLayer`]), so a request that takes long without
//! moving bytes, a slow query or a slow disk, is never cut off.
//!
//! The hot path pays an `Instant::now()` per read and write and an atomic
//! count per request; the timer is armed once per connection and re-armed
//! only when it fires.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use faasight_collector::connections::Admitted;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a connection may be idle before it is closed: above the
/// idle timeouts of load balancers (60 s on AWS), so that those close
/// first, and below anything that lets idle connections pile up.
pub(crate) const IDLE_TIME: Duration = Duration::from_secs(120);

/// The instant [`Activity`] counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// What one connection is doing: its requests in flight and when it last
/// moved a byte or finished a request.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Nanoseconds after [`epoch`].
    last: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(since_epoch(Instant::now())),
        })
    }

    fn touch(&self) {
        self.last
            .store(since_epoch(Instant::now()), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        epoch() + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// A request in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket that fails once the connection is idle.
pub(crate) struct IdleIo<T> {
    io: T,
    /// The connection's place in the process's budget, given back when it
    /// closes.
    _admitted: Admitted,
    activity: Arc<Activity>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether the timer has been polled since it was last reset.
    armed: bool,
}

impl<T> IdleIo<T> {
    pub(crate) fn new(io: T, idle: Duration, admitted: Admitted) -> Self {
        IdleIo {
            io,
            _admitted: admitted,
            activity: Activity::new(),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
        }
    }

    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Called when the socket has nothing to give or take: ready with an
    /// error once the connection is idle, else pending with the timer set
    /// for when it could be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // Once polled, the timer holds the connection task's waker until it
        // fires: polling it again on every pending read would cost more
        // than the check.
        if self.armed && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        self.armed = true;
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let due = self.activity.last() + self.idle;
            if self.activity.in_flight.load(Ordering::Relaxed) > 0 {
                self.timer.as_mut().reset(now + self.idle);
            } else if due <= now {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle, closed",
                ));
            } else {
                self.timer.as_mut().reset(due);
            }
        }
        Poll::Pending
    }

    /// Notes progress of a read or write, or checks for idleness when the
    /// socket is pending.
    fn progress<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
        moved: bool,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                if moved {
                    self.activity.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        this.progress(cx, polled, moved)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        this.progress(cx, polled, moved)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        this.progress(cx, polled, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.progress(cx, polled, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// gRPC requests find their connection's [`Activity`] here: tonic puts
/// each connection's info into its requests' extensions.
impl tonic::transport::server::Connected for IdleIo<tokio::net::TcpStream> {
    type ConnectInfo = Arc<Activity>;

    fn connect_info(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }
}

/// Counts each gRPC request in flight on its connection (see the module
/// doc).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InFlightLayer;

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> InFlightService<S> {
        InFlightService { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InFlightService<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for InFlightService<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<Arc<Activity>>()
            .map(Activity::begin);
        let call = self.inner.call(request);
        Box::pin(async move {
            let answer = call.await;
            drop(guard);
            answer
        })
    }
}
