// Package kubernetes checks the example manifests beside it (and the
// repository's Dockerfile) without a cluster: each document decodes strictly
// into the Kubernetes API type of its kind (an unknown or misspelt field is
// an error, as with kubectl's server-side validation), and the invariants
// that the README promises hold. It is a module of its own, so that boxproxy
// itself does not depend on k8s.io/api; .ci/run tests it.
package kubernetes

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// ownImage is the placeholder for the image built from the Dockerfile.
const ownImage = "registry.example.com/boxproxy:v0.1.0"

var pinned = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)

// doc is one YAML document of a file.
type doc struct {
	file string
	kind string
	data []byte
}

func readDocs(t *testing.T, file string) []doc {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []doc
	for i, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(part, "")) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(part), &meta); err != nil {
			t.Fatalf("%s document %d: %v", file, i+1, err)
		}
		out = append(out, doc{file: file, kind: meta.APIVersion + "/" + meta.Kind, data: []byte(part)})
	}
	return out
}

// strict decodes d into v, refusing unknown fields.
func strict(t *testing.T, d doc, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(d.data, v); err != nil {
		t.Fatalf("%s (%s): %v", d.file, d.kind, err)
	}
}

// podOf decodes a Deployment or Job and returns its pod template.
func podOf(t *testing.T, d doc) corev1.PodSpec {
	t.Helper()
	switch d.kind {
	case "apps/v1/Deployment":
		var o appsv1.Deployment
		strict(t, d, &o)
		return o.Spec.Template.Spec
	case "batch/v1/Job":
		var o batchv1.Job
		strict(t, d, &o)
		return o.Spec.Template.Spec
	}
	t.Fatalf("%s: unexpected kind %s", d.file, d.kind)
	return corev1.PodSpec{}
}

func env(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func TestSecretLivesOnlyInTheTemplateThatKubectlApplyOfTheDirectorySkips(t *testing.T) {
	yamls, _ := filepath.Glob("*.yaml")
	ymls, _ := filepath.Glob("*.yml")
	jsons, _ := filepath.Glob("*.json")
	for _, f := range append(append(yamls, ymls...), jsons...) {
		for _, d := range readDocs(t, f) {
			if strings.HasSuffix(d.kind, "/Secret") {
				t.Errorf("%s holds a Secret: `kubectl apply -f deploy/kubernetes/` would overwrite the real one with placeholders", f)
			}
		}
	}
	docs := readDocs(t, "secret.yaml.example")
	if len(docs) != 1 || docs[0].kind != "v1/Secret" {
		t.Fatalf("secret.yaml.example: %d documents, want one Secret", len(docs))
	}
	var s corev1.Secret
	strict(t, docs[0], &s)
	if s.Name != "boxproxy" || !strings.Contains(s.StringData["config.json"], "boxAppSettings") {
		t.Errorf("secret.yaml.example: name %q, keys %v; want Secret boxproxy with config.json", s.Name, s.StringData)
	}
}

func TestBoxproxyIsANativeSidecarProbedOnTheAdminPortWithItsDataPortOnLoopback(t *testing.T) {
	for _, f := range []string{"sidecar.yaml", "job.yaml"} {
		docs := readDocs(t, f)
		if len(docs) != 1 {
			t.Fatalf("%s: %d documents, want 1", f, len(docs))
		}
		pod := podOf(t, docs[0])
		for _, c := range pod.Containers {
			if c.Name == "boxproxy" || strings.Contains(c.Image, "boxproxy") {
				t.Errorf("%s: boxproxy is an ordinary container; it must be a native sidecar (initContainers, restartPolicy: Always)", f)
			}
		}
		var bp *corev1.Container
		for i, c := range pod.InitContainers {
			if c.Name == "boxproxy" {
				bp = &pod.InitContainers[i]
			}
		}
		if bp == nil {
			t.Fatalf("%s: no boxproxy init container", f)
		}
		if bp.RestartPolicy == nil || *bp.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: boxproxy has no restartPolicy: Always (not a native sidecar)", f)
		}
		if v, ok := env(*bp, "BOXPROXY_QUIT_ENDPOINT"); ok && v != "false" {
			t.Errorf("%s: BOXPROXY_QUIT_ENDPOINT=%s; a native sidecar needs no /quitquitquit", f, v)
		}
		listen, _ := env(*bp, "BOXPROXY_LISTEN")
		if h, _, err := net.SplitHostPort(listen); listen != "" && (err != nil || h != "127.0.0.1") {
			t.Errorf("%s: BOXPROXY_LISTEN=%s, want the data port on loopback", f, listen)
		}
		if _, ok := env(*bp, "BOXPROXY_INBOUND_KEY_FILE"); ok {
			t.Errorf("%s: an inbound key on a loopback data port protects nothing the pod boundary does not", f)
		}
		admin, ok := env(*bp, "BOXPROXY_ADMIN_LISTEN")
		_, adminPort, err := net.SplitHostPort(admin)
		if !ok || err != nil {
			t.Fatalf("%s: BOXPROXY_ADMIN_LISTEN=%q, want host:port", f, admin)
		}
		ports := map[string]string{}
		for _, p := range bp.Ports {
			ports[p.Name] = fmt.Sprint(p.ContainerPort)
		}
		probes := map[string]*corev1.Probe{"startup": bp.StartupProbe, "liveness": bp.LivenessProbe, "readiness": bp.ReadinessProbe}
		n := 0
		for name, p := range probes {
			if p == nil {
				continue
			}
			n++
			if p.HTTPGet == nil {
				t.Errorf("%s: the %s probe is not an HTTP GET", f, name)
				continue
			}
			port := p.HTTPGet.Port.String()
			if p.HTTPGet.Port.Type == intstr.String {
				port = ports[port]
			}
			if port != adminPort {
				t.Errorf("%s: the %s probe uses port %s, want the admin port %s", f, name, p.HTTPGet.Port.String(), adminPort)
			}
			if p.HTTPGet.Path != "/healthz" && p.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: the %s probe GETs %s", f, name, p.HTTPGet.Path)
			}
		}
		if n == 0 || bp.StartupProbe == nil {
			t.Errorf("%s: boxproxy has no startup probe (the app would start before the proxy serves)", f)
		}
		for _, c := range append(append([]corev1.Container(nil), pod.Containers...), pod.InitContainers...) {
			all := strings.Join(append(append([]string(nil), c.Command...), c.Args...), " ")
			if strings.Contains(all, "quitquitquit") {
				t.Errorf("%s: container %s calls /quitquitquit", f, c.Name)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Drop) == 0 {
				t.Errorf("%s: container %s is not hardened (read-only root, no privilege escalation, capabilities dropped)", f, c.Name)
			}
			if c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: container %s has no memory limit", f, c.Name)
			}
		}
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: the pod does not run as non-root", f)
		}
	}
}

// qualified says whether an image reference names its registry.
func qualified(image string) bool {
	first, _, ok := strings.Cut(image, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

func TestImagesAreFullyQualifiedAndPinnedByDigest(t *testing.T) {
	for _, f := range []string{"sidecar.yaml", "job.yaml"} {
		pod := podOf(t, readDocs(t, f)[0])
		for _, c := range append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...) {
			if !qualified(c.Image) {
				t.Errorf("%s: image %q is a short name (buildah, podman and CRI-O resolve none)", f, c.Image)
			}
			if c.Image != ownImage && !pinned.MatchString(c.Image) {
				t.Errorf("%s: image %q is not pinned by digest", f, c.Image)
			}
		}
	}
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]string{}
	froms := 0
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "ARG":
			if k, v, ok := strings.Cut(fields[1], "="); ok {
				args[k] = v
			} else {
				args[k] = ""
			}
		case "FROM":
			froms++
			image := fields[1]
			if strings.HasPrefix(image, "--platform=") {
				if image != "--platform=$BUILDPLATFORM" {
					t.Errorf("Dockerfile: FROM %s; the build stage runs on $BUILDPLATFORM and cross-compiles", image)
				}
				image = fields[2]
			}
			if m := regexp.MustCompile(`^\$\{?(\w+)\}?$`).FindStringSubmatch(image); m != nil {
				image = args[m[1]]
			}
			if !qualified(image) || !pinned.MatchString(image) {
				t.Errorf("Dockerfile: base image %q is not fully qualified and pinned by digest", image)
			}
		}
	}
	if froms != 2 {
		t.Errorf("Dockerfile: %d stages, want 2 (build, runtime)", froms)
	}
	for _, want := range []string{"TARGETOS", "TARGETARCH"} {
		if _, ok := args[want]; !ok || !bytes.Contains(data, []byte("${"+want+"}")) {
			t.Errorf("Dockerfile: no ARG %s used by the build (multi-arch images)", want)
		}
	}
	if !regexp.MustCompile(`(?m)^USER [0-9]+:[0-9]+$`).Match(data) {
		t.Error("Dockerfile: USER is not numeric (runAsNonRoot cannot check a name)")
	}
}
