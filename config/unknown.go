package config

import (
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/agnivade/levenshtein"
)

// Names returns every variable boxproxy reads: each setting and the _FILE
// form of each secret.
func Names() []string {
	var out []string
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("env")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, Prefix+name)
		if f.Tag.Get("secret") != "" {
			out = append(out, Prefix+name+"_FILE")
		}
	}
	return out
}

// Unknown returns a Problem for every BOXPROXY_* variable in environ that
// boxproxy does not read, with the closest known name when one is close:
// "BOXPROXY_ENTERPRISEID: unknown variable; did you mean BOXPROXY_ENTERPRISE_ID?".
// A typo otherwise goes unnoticed, or silently changes the auth method.
func Unknown(environ []string) []Problem {
	known := map[string]bool{}
	names := Names()
	for _, n := range names {
		known[n] = true
	}
	var out []Problem
	seen := map[string]bool{}
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, Prefix) || known[k] || seen[k] || serviceLink.MatchString(k) {
			continue
		}
		seen[k] = true
		msg := "unknown variable; boxproxy --help lists every variable"
		if s := closest(k, names); s != "" {
			msg = "unknown variable; did you mean " + s + "?"
		}
		out = append(out, Problem{Var: sanitizeName(k), Msg: msg})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Var < out[j].Var })
	return out
}

// serviceLink matches the variables Kubernetes puts into every pod for each
// Service of its namespace (enableServiceLinks): a Service named boxproxy (or
// boxproxy-admin…) gives BOXPROXY_SERVICE_HOST, BOXPROXY_PORT_8080_TCP_ADDR and
// the like. They are not typos, and must not fail boxproxy check.
var serviceLink = regexp.MustCompile(`^` + Prefix + `([A-Z0-9_]+_)?(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$`)

// closest is the known name nearest to name (case-insensitive edit distance),
// or "" when none is near enough to be a likely typo.
func closest(name string, names []string) string {
	u := strings.ToUpper(strings.TrimPrefix(name, Prefix))
	limit := max(2, len(u)/3) // a third of the name may be wrong: ENTERPRISEID, LOG_LEVLE
	best, bestScore, bestD := "", 1<<30, 1<<30
	for _, n := range names {
		k := strings.TrimPrefix(n, Prefix)
		d := levenshtein.ComputeDistance(u, k)
		score := d
		// A name cut short or run on (TOKEN_CACHE, CLIENT_SECRET_PATH) is near too.
		if short := min(len(u), len(k)); short >= 5 && (strings.HasPrefix(k, u) || strings.HasPrefix(u, k)) {
			score = min(d, limit)
		}
		if score < bestScore || (score == bestScore && d < bestD) {
			best, bestScore, bestD = n, score, d
		}
	}
	if bestScore > limit {
		return ""
	}
	return best
}

// sanitizeName keeps a variable name printable and short.
func sanitizeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return '?'
		}
		return r
	}, s)
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return s
}
