package proxy

import (
	"context"
	"io"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// A watchdog bounds a stalled request-body write. net/http's
// ResponseHeaderTimeout (BOXPROXY_UPSTREAM_TIMEOUT) starts only once the
// whole request is written: a Box (or an egress proxy) that accepts the
// connection and then stops reading would block the body's write forever,
// and with it the handler, the connection towards Box and, since Go's server
// watches for a client's hang-up only once the request body was read to the
// end, any notice that the client left.
//
// The Transport reads the body as it writes it, so progress shows on the
// body: each Read stamps the time. One timer per attempt with a body checks
// the stamp when it fires and re-arms itself for the rest of the bound; only
// when nothing was taken for the whole bound (and no Read is waiting on the
// client, whose slowness is not Box's) does it cancel the attempt, and send
// reports the cause as a bodyStalledError (a 504). Nothing is added to the
// connection (no deadline per write), so net/http's own write paths and
// HTTP/2 are unchanged; a request without a body gets no watchdog.
//
// The clock runs from the request's header being written (not while a
// connection is dialled or waited for) to the request being written whole
// (httptrace's WroteRequest), after which ResponseHeaderTimeout takes over.
// The wait for 100 Continue (up to expectContinueWait) counts as progress
// expected, not as a stall. A write that failed and that the Transport
// retries on a new connection starts the clock again.
type watchdog struct {
	bound  time.Duration
	start  time.Time
	cancel context.CancelCauseFunc
	parent context.Context // the request's: once it is done, nothing is Box's fault
	// last is when the body last made progress (nanoseconds since start;
	// it may lie ahead, as during the wait for 100 Continue), or reading
	// while a Read is under way.
	last atomic.Int64

	mu      sync.Mutex
	timer   *time.Timer
	armed   bool              // between the header written and the request written
	over    bool              // the attempt is over: never fire
	stalled *bodyStalledError // set when the watchdog cancelled the attempt
	trace   httptrace.ClientTrace
	body    watchedBody // the first reader of the body (GetBody makes others)
}

const reading = -1 << 63 // in last: a Read is waiting for the client

// newWatchdog returns a watchdog for one attempt, whose body (w.body) is r
// reporting its progress, and the attempt's context, which the watchdog
// cancels when the body stalls.
func newWatchdog(parent context.Context, bound time.Duration, start time.Time, r io.Reader) (*watchdog, context.Context) {
	w := &watchdog{bound: bound, start: start, parent: parent}
	ctx, cancel := context.WithCancelCause(parent)
	w.cancel = cancel
	w.body = watchedBody{r: r, w: w}
	w.trace = httptrace.ClientTrace{
		WroteHeaders:    w.arm,
		Wait100Continue: w.waitContinue,
		Got100Continue:  w.progress,
		WroteRequest:    w.wrote,
	}
	return w, httptrace.WithClientTrace(ctx, &w.trace)
}

func (w *watchdog) now() int64 { return int64(time.Since(w.start)) }

func (w *watchdog) progress() { w.last.Store(w.now()) }

// waitContinue: the body goes once 100 Continue comes, or after
// expectContinueWait without it.
func (w *watchdog) waitContinue() { w.last.Store(w.now() + int64(expectContinueWait)) }

func (w *watchdog) arm() {
	w.progress()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.over || w.stalled != nil {
		return
	}
	w.armed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(w.bound, w.check)
	} else {
		w.timer.Reset(w.bound)
	}
}

func (w *watchdog) wrote(httptrace.WroteRequestInfo) { w.disarm() }

// disarm stops the clock: the request was written, or its write failed
// (the Transport may try it on a new connection: arm starts it again).
func (w *watchdog) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	if w.timer != nil {
		w.timer.Stop()
	}
}

// check runs when the timer fires: it re-arms the timer for the rest of
// the bound after the last progress, or cancels the attempt.
func (w *watchdog) check() {
	w.mu.Lock()
	if !w.armed || w.over || w.parent.Err() != nil {
		w.mu.Unlock()
		return
	}
	last := w.last.Load()
	if last == reading {
		w.timer.Reset(w.bound) // waiting for the client's bytes
		w.mu.Unlock()
		return
	}
	if idle := time.Duration(w.now() - last); idle < w.bound {
		w.timer.Reset(w.bound - idle)
		w.mu.Unlock()
		return
	}
	w.armed = false
	w.stalled = &bodyStalledError{bound: w.bound}
	err := w.stalled
	w.mu.Unlock()
	w.cancel(err)
}

// stop ends the watch when the attempt's RoundTrip returned, and says
// whether the watchdog had cancelled it. The attempt's context stays
// uncancelled otherwise (the answer's body is read under it); it ends with
// the request's.
func (w *watchdog) stop() *bodyStalledError {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.over, w.armed = true, false
	if w.timer != nil {
		w.timer.Stop()
	}
	return w.stalled
}

// watchedBody is a request body that stamps its progress on a watchdog.
type watchedBody struct {
	r io.Reader
	w *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.last.Store(reading)
	n, err := b.r.Read(p)
	b.w.progress()
	return n, err
}

// Close is left to the owner of the reader (the server's body, or memory).
func (b *watchedBody) Close() error { return nil }

// bodyStalledError: Box took none of the request body for the bound.
type bodyStalledError struct{ bound time.Duration }

func (e *bodyStalledError) Error() string {
	return "Box stopped reading the request body (nothing of it taken for " + e.bound.String() + ")"
}

// Timeout makes it a timeout for retryReason and for the 504.
func (e *bodyStalledError) Timeout() bool { return true }
