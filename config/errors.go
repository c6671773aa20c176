package config

import (
	"fmt"
	"strings"
)

// A Problem is one thing wrong with the configuration: the variable it is
// about and a sentence saying what to fix. It never holds a variable's value.
type Problem struct {
	Var string // e.g. BOXPROXY_LISTEN
	Msg string
}

func (p Problem) Error() string { return p.Var + ": " + p.Msg }

// Errors is every problem Load found, in the order of the variables. Its
// Error is one line, so that a failed start is one log line.
type Errors []Problem

func (e Errors) Error() string {
	if len(e) == 1 {
		return e[0].Error()
	}
	msgs := make([]string, len(e))
	for i, p := range e {
		msgs[i] = p.Error()
	}
	return fmt.Sprintf("%d configuration errors: %s", len(e), strings.Join(msgs, "; "))
}

// Unwrap lets errors.As find each Problem.
func (e Errors) Unwrap() []error {
	out := make([]error, len(e))
	for i, p := range e {
		out[i] = p
	}
	return out
}

// problems collects Problems; a variable that already has one gets no second
// (a value that does not parse is not also "too small").
type problems struct {
	list     Errors
	seen     map[string]bool
	checkKey func([]byte, string) error
}

func (ps *problems) add(name, format string, args ...any) {
	v := Prefix + name
	if ps.seen[v] {
		return
	}
	if ps.seen == nil {
		ps.seen = map[string]bool{}
	}
	ps.seen[v] = true
	ps.list = append(ps.list, Problem{Var: v, Msg: fmt.Sprintf(format, args...)})
}

// mark keeps later problems off name, whose cause is already reported
// (a _FILE that cannot be read leaves its variable unset).
func (ps *problems) mark(name string) {
	if ps.seen == nil {
		ps.seen = map[string]bool{}
	}
	ps.seen[Prefix+name] = true
}

func (ps *problems) has(name string) bool { return ps.seen[Prefix+name] }

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return ps.list
}
