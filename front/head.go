package front

import "bytes"

// Field is one header field of a request head, as sent.
type Field struct{ Name, Value []byte }

// Head is a parsed request head. Its slices point into the connection's read
// buffer: they stay valid until the handler reads from the client again.
type Head struct {
	Method string  // "GET" or "HEAD"
	Target []byte  // the origin-form request-target, as sent
	Path   []byte  // Target up to '?'
	Query  []byte  // after '?'; nil when there is no '?'
	Host   []byte  // the one Host field's value
	Fields []Field // every field, in order, Host included
	Close  bool    // Connection: close
	size   int     // bytes of the head, with the empty line that ends it
}

// Get returns the first value of the field name (ASCII case-insensitive) and
// how many fields of that name there are.
func (h *Head) Get(name string) (value []byte, n int) {
	for i := range h.Fields {
		if EqualFold(h.Fields[i].Name, name) {
			if n == 0 {
				value = h.Fields[i].Value
			}
			n++
		}
	}
	return value, n
}

// maxFields bounds the fields of a head taken by the fast path; a head with
// more goes to net/http (which has its own byte limit).
const maxFields = 100

// parseHead parses b, a complete request head ending in CRLF CRLF, into h. It
// accepts only what is plainly valid and plainly simple: a GET or HEAD in
// HTTP/1.1 with an origin-form target of safe characters, well-formed fields
// with visible-ASCII values, exactly one Host, and none of the fields that
// change framing or connection handling (Content-Length, Transfer-Encoding,
// Expect, Upgrade, TE, Trailer, or a Connection other than keep-alive or
// close). Anything else returns false and goes to net/http's server, which
// answers it as it always did: strictness here costs only speed.
func parseHead(b []byte, h *Head) bool {
	*h = Head{Fields: h.Fields[:0], size: len(b)}
	line, rest, ok := cutCRLF(b)
	if !ok {
		return false
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		h.Method, line = "GET", line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		h.Method, line = "HEAD", line[5:]
	default:
		return false
	}
	target, ok := bytes.CutSuffix(line, []byte(" HTTP/1.1"))
	if !ok || len(target) == 0 || target[0] != '/' {
		return false
	}
	h.Target, h.Path = target, target
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		h.Path, h.Query = target[:i], target[i+1:]
	}
	for _, c := range h.Path {
		if !pathChar[c] {
			return false
		}
	}
	for _, c := range h.Query {
		if !queryChar[c] {
			return false
		}
	}
	hosts := 0
	for {
		line, rest, ok = cutCRLF(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			break // the empty line that ends the head
		}
		if len(h.Fields) == maxFields {
			return false
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !tokenChar[c] {
				return false
			}
		}
		for _, c := range value {
			if c < 0x20 && c != '\t' || c >= 0x7f {
				return false
			}
		}
		switch {
		case EqualFold(name, "Host"):
			hosts++
			h.Host = value
		case EqualFold(name, "Connection"):
			switch {
			case EqualFold(value, "close"):
				h.Close = true
			case EqualFold(value, "keep-alive"):
			default:
				return false
			}
		case EqualFold(name, "Content-Length"), EqualFold(name, "Transfer-Encoding"),
			EqualFold(name, "Expect"), EqualFold(name, "Upgrade"), EqualFold(name, "TE"),
			EqualFold(name, "Trailer"):
			return false
		}
		h.Fields = append(h.Fields, Field{Name: name, Value: value})
	}
	return hosts == 1 && len(rest) == 0
}

// cutCRLF splits b at the first CRLF. A bare CR or LF before it is refused.
func cutCRLF(b []byte) (line, rest []byte, ok bool) {
	for i, c := range b {
		switch c {
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				return b[:i], b[i+2:], true
			}
			return nil, nil, false
		case '\n':
			return nil, nil, false
		}
	}
	return nil, nil, false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// EqualFold compares b with an ASCII name, ignoring case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// IsTokenChar says whether c may appear in a field name (RFC 9110 tchar).
func IsTokenChar(c byte) bool { return tokenChar[c] }

var tokenChar, pathChar, queryChar [256]bool

func init() {
	for c := 0; c < 256; c++ {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		tokenChar[c] = alnum || bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), byte(c)) >= 0
		// RFC 3986 pchar without '%': unreserved, sub-delims, ':' and '@'.
		pathChar[c] = alnum || bytes.IndexByte([]byte("-._~!$&'()*+,;=:@/"), byte(c)) >= 0
		// A query may also hold '?' and percent-encoding.
		queryChar[c] = pathChar[c] || c == '?' || c == '%'
	}
}
