package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The linker drops the methods a program never calls, unless the program can
// reach reflect's Method or MethodByName with a name it only knows at run
// time (html/template and text/template's Execute do): then it keeps every
// exported method of every type, and boxproxy's executable grows from about
// 20 MiB to 31 MiB (the Redis client's hundreds of commands), with about
// 3 MiB more of it resident in every replica. This test names the callers
// from the linker's own dependency graph.
func TestNothingDefeatsTheLinkersDeadMethodElimination(t *testing.T) {
	out, err := exec.Command("go", "build", "-buildvcs=false", "-o", t.TempDir()+"/boxproxy", "-ldflags=-dumpdep", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -ldflags=-dumpdep: %v\n%s", err, out)
	}
	// The linker marks such a function <ReflectMethod> in its graph.
	// (go-redis calls MethodByName("SetVal"), with a constant: the compiler
	// tells the linker the name, so that call keeps only methods named so.)
	marked := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		for _, side := range strings.Split(line, " -> ") {
			fn, _, ok := strings.Cut(side, " <ReflectMethod>")
			if fn, _, _ = strings.Cut(fn, " <"); ok && !marked[fn] {
				marked[fn] = true
				t.Errorf("%s can look up methods by a run-time name: the linker now keeps every exported method (did html/template, or a cobra template, come back?)", fn)
			}
		}
	}
	if !strings.Contains(string(out), "-> reflect.") {
		t.Fatalf("the linker printed no dependency graph; did -dumpdep change? first bytes:\n%.500s", out)
	}
}
