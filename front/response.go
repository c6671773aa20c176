package front

import (
	"net/http"
	"strconv"
	"time"
)

// ResponseWriter is a small http.ResponseWriter over a fast-path connection,
// for the answers the handler makes itself (errors): the body's length must
// be set in Content-Length before the body is written.
type ResponseWriter struct {
	c      *Conn
	h      http.Header
	status int
	close  bool
}

// NewResponseWriter returns a writer for one answer on c; close adds
// "Connection: close".
func (c *Conn) NewResponseWriter(close bool) *ResponseWriter {
	return &ResponseWriter{c: c, h: make(http.Header), close: close || c.Closing()}
}

// Header is the answer's header, as in http.ResponseWriter.
func (w *ResponseWriter) Header() http.Header { return w.h }

// WriteHeader writes the status line and the header.
func (w *ResponseWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	bw := w.c.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
	if w.close {
		w.h.Set("Connection", "close")
	}
	if _, ok := w.h["Date"]; !ok {
		w.h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	_ = w.h.Write(bw)
	bw.WriteString("\r\n")
}

// Write writes body bytes (after the header).
func (w *ResponseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.c.bw.Write(b)
}
