// Package accesslog carries what the access log keeps of one request through
// the request's context: the server makes an Entry, puts it in the request's
// context and logs it when the request ends; the proxy and the error writer
// fill it in on the way.
package accesslog

import "context"

// Entry is what the access log and the metrics keep of one request, beyond
// what the server sees itself (method, path, status, bytes, duration).
//
// An Entry is also a context: the request's own, plus the Entry itself, so
// that carrying it costs no allocation beyond the Entry's. Set Context to the
// request's context before passing the Entry as one (In does).
type Entry struct {
	context.Context

	Route        string // api, upload, auth, healthz, …
	Subject      string // enterprise:ID or user:ID, for proxied requests
	Attempts     int    // requests sent to Box
	BoxRequestID string // Box's request ID, when Box sent one
	Code         string // the error code of an answer boxproxy made itself
}

type key struct{}

// Value is the Entry itself for this package's key, else the parent's value.
func (e *Entry) Value(k any) any {
	if k == (key{}) {
		return e
	}
	return e.Context.Value(k)
}

// In makes e a context: parent plus e. When parent carries e already, it is
// returned as it is: e as its own ancestor would make every look-up through
// it recurse without end.
func (e *Entry) In(parent context.Context) context.Context {
	if f, ok := Lookup(parent); ok && f == e {
		return parent
	}
	e.Context = parent
	return e
}

// Lookup returns the Entry ctx carries, if any.
func Lookup(ctx context.Context) (*Entry, bool) {
	if e, ok := ctx.(*Entry); ok {
		return e, true
	}
	e, ok := ctx.Value(key{}).(*Entry)
	return e, ok
}

// From returns the Entry ctx carries, or a throwaway one, so that callers
// need not check.
func From(ctx context.Context) *Entry {
	if e, ok := Lookup(ctx); ok {
		return e
	}
	return &Entry{Context: ctx}
}
