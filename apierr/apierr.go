// Package apierr writes the errors that boxproxy itself produces, as JSON in the
// shape of Box's own error bodies, so that clients parse them like any Box error.
package apierr

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/boxproxy/boxproxy/accesslog"
)

// Body is the JSON shape of an error: the same fields Box uses.
type Body struct {
	Type      string `json:"type"`
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// Error is an error that knows how it should be answered over HTTP.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; 0 = no Retry-After header
}

func (e *Error) Error() string { return e.Message }

// Marshal returns the JSON body for status, code and message.
func Marshal(status int, code, message, requestID string) []byte {
	b, _ := json.Marshal(Body{Type: "error", Status: status, Code: code, Message: message, RequestID: requestID})
	return append(b, '\n')
}

// Write answers with a JSON error. The request ID, when the response already
// carries one, is repeated in the body.
func Write(w http.ResponseWriter, status int, code, message string) {
	body := Marshal(status, code, message, w.Header().Get("X-Request-Id"))
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteError answers with e.
func WriteError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	Write(w, e.Status, e.Code, e.Message)
}

// Bounds on reading the body of a request that is refused before its body
// was read (see Refuse).
const (
	DrainLimit = 64 << 20
	DrainTime  = 15 * time.Second
)

// Refuse answers r with e, notes e's code for the access log, and makes sure
// the client reads the answer. A client still sending a body would otherwise
// meet a reset: net/http closes a connection whose unread body is large, and
// the client's next write then fails before it reads the error. So the
// answer is sent first and the body is read and dropped afterwards (Drain);
// the connection then stays usable.
func Refuse(w http.ResponseWriter, r *http.Request, e *Error) {
	accesslog.From(r.Context()).Code = e.Code
	drain := hasBody(r) && http.NewResponseController(w).EnableFullDuplex() == nil
	WriteError(w, e)
	if drain {
		Drain(w, r)
	}
}

// hasBody reports whether r has a body its client is sending. A client that
// sent Expect: 100-continue sends none until it is asked to.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 &&
		!strings.EqualFold(r.Header.Get("Expect"), "100-continue")
}

// Drain reads and drops what is left of r's body after its answer was
// written, up to DrainLimit bytes and DrainTime, so that a client still
// sending it reads the answer and keeps its connection. It needs full
// duplex (http.ResponseController.EnableFullDuplex) enabled before the
// answer was written; over HTTP/2 it is not needed (only the stream ends).
func Drain(w http.ResponseWriter, r *http.Request) {
	if !hasBody(r) || r.ProtoMajor != 1 {
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(DrainTime))
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, DrainLimit))
	_ = rc.SetReadDeadline(time.Time{})
}
