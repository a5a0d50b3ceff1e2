package stack

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestPKI(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.CACert))

	serving := readCert(t, p.ServingCert)
	for _, host := range []string{"127.0.0.1", "localhost", "kubernetes.default.svc"} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}

	admin := readCert(t, p.AdminCert)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	if got := admin.Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
		t.Errorf("admin organization = %v, want [system:masters]", got)
	}
	for _, f := range []string{p.SAKey, p.SAPub, p.AdminKey, p.ServingKey} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
}

func git(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=T", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := git(t, dir, args...)
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return out
}

func TestGitServer(t *testing.T) {
	s, err := StartGitServer(filepath.Join(t.TempDir(), "repos"), "alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	repoURL, err := s.CreateRepository("apps")
	if err != nil {
		t.Fatal(err)
	}
	if want := s.URL + "/apps.git"; repoURL != want {
		t.Fatalf("URL = %s, want %s", repoURL, want)
	}
	if _, err := s.CreateRepository("apps"); err == nil {
		t.Fatal("creating a repository twice succeeded")
	}
	withUser := func(user, pass string) string {
		u, _ := url.Parse(repoURL)
		u.User = url.UserPassword(user, pass)
		return u.String()
	}
	work := t.TempDir()

	if out, err := git(t, work, "clone", repoURL, "anonymous"); err == nil {
		t.Fatalf("anonymous clone succeeded: %s", out)
	}
	if out, err := git(t, work, "clone", withUser("alice", "wrong"), "wrong"); err == nil {
		t.Fatalf("clone with a wrong password succeeded: %s", out)
	}

	mustGit(t, work, "clone", "--quiet", withUser("alice", "s3cret"), "first")
	first := filepath.Join(work, "first")
	if err := os.WriteFile(filepath.Join(first, "app.yaml"), []byte("kind: Deployment\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGit(t, first, "add", "-A")
	mustGit(t, first, "commit", "--quiet", "-m", "Add app")
	mustGit(t, first, "push", "--quiet", "origin", "HEAD:main")
	pushed := mustGit(t, first, "rev-parse", "HEAD")

	mustGit(t, work, "clone", "--quiet", withUser("alice", "s3cret"), "second")
	if got := mustGit(t, filepath.Join(work, "second"), "rev-parse", "origin/main"); got != pushed {
		t.Fatalf("cloned main = %s, want the pushed %s", got, pushed)
	}
}

func TestReadCRDs(t *testing.T) {
	crds, err := readCRDs(filepath.Join("..", "..", "config", "crd", "bases"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.Name)
	}
	want := "deliveries.delivery.sluice.dev,deliverypolicies.delivery.sluice.dev"
	if got := strings.Join(names, ","); got != want {
		t.Fatalf("CRDs = %s, want %s", got, want)
	}

	// Other kinds in the same folder, like a kustomization.yaml, are
	// skipped.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if crds, err := readCRDs(dir); err != nil || len(crds) != 0 {
		t.Fatalf("readCRDs = %d CRDs, %v; want none", len(crds), err)
	}
}

func TestEnvIsShellSourceable(t *testing.T) {
	s := &Stack{
		Kubeconfig: "/tmp/stack dir/kubeconfig",
		Git:        &GitServer{URL: "http://127.0.0.1:1234", Root: "/tmp/it's/git", Username: "sluice", Password: `p"a$s'w`},
	}
	file := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(file, []byte(s.Env()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "-c", `source "$1" && printf '%s|%s|%s|%s|%s' "$KUBECONFIG" "$SLUICE_GIT_URL" "$SLUICE_GIT_ROOT" "$SLUICE_GIT_USERNAME" "$SLUICE_GIT_PASSWORD"`, "bash", file).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := `/tmp/stack dir/kubeconfig|http://127.0.0.1:1234|/tmp/it's/git|sluice|p"a$s'w`
	if string(out) != want {
		t.Fatalf("sourced env = %s, want %s", out, want)
	}
}

// TestStopAbandoned stops the components of a stack whose owner is gone,
// and leaves alone those of a stack whose owner runs.
func TestStopAbandoned(t *testing.T) {
	root := t.TempDir()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	component := func(dir string, owner int) *exec.Cmd {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, "pids"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(owner)), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		if err := os.WriteFile(filepath.Join(dir, "pids", "sleep.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+" "+startTime(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	abandoned := component(filepath.Join(root, "run-abandoned"), gone.Process.Pid)
	running := component(filepath.Join(root, "run-running"), os.Getpid())
	exited, runningExited := make(chan error, 1), make(chan error, 1)
	go func() { exited <- abandoned.Wait() }()
	go func() { runningExited <- running.Wait() }()

	// A PID file whose process is gone and whose PID another process took
	// since: the start time differs, and that process is left alone.
	reused := filepath.Join(root, "run-reused")
	other := component(reused, gone.Process.Pid)
	otherExited := make(chan error, 1)
	go func() { otherExited <- other.Wait() }()
	if err := os.WriteFile(filepath.Join(reused, "pids", "sleep.pid"), []byte(strconv.Itoa(other.Process.Pid)+" 1"), 0o644); err != nil {
		t.Fatal(err)
	}

	stopped, err := StopAbandoned(filepath.Join(root, "run-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(stopped) != 2 || stopped[0] != filepath.Join(root, "run-abandoned") || stopped[1] != reused {
		t.Fatalf("stopped %v, want the abandoned runs", stopped)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned run's component still runs")
	}
	select {
	case err := <-runningExited:
		t.Fatalf("the running stack's component was stopped: %v", err)
	case err := <-otherExited:
		t.Fatalf("a process that took a recorded PID was stopped: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestGitServerStopAndRestart: a stopped server refuses connections, and
// serves the same repositories on the same address once restarted; OnPush
// hears of each push before the pusher does.
func TestGitServerStopAndRestart(t *testing.T) {
	s, err := StartGitServer(filepath.Join(t.TempDir(), "repos"), "alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.CreateRepository("apps"); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(s.RepositoryURL("apps"))
	u.User = url.UserPassword("alice", "s3cret")
	work := t.TempDir()
	mustGit(t, work, "clone", "--quiet", u.String(), "apps")
	apps := filepath.Join(work, "apps")
	mustGit(t, apps, "commit", "--quiet", "--allow-empty", "-m", "First")

	var pushed []string
	s.OnPush(func(repository string) { pushed = append(pushed, repository) })
	mustGit(t, apps, "push", "--quiet", "origin", "HEAD:main")
	if len(pushed) != 1 || pushed[0] != "apps" {
		t.Fatalf("OnPush heard of %v, want [apps]", pushed)
	}
	s.OnPush(nil)

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(s.URL, "http://"), time.Second); err == nil {
		t.Fatal("a stopped server accepts connections")
	}
	if out, err := git(t, apps, "fetch", "origin"); err == nil {
		t.Fatalf("fetching from a stopped server succeeded: %s", out)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	mustGit(t, apps, "commit", "--quiet", "--allow-empty", "-m", "Second")
	mustGit(t, apps, "push", "--quiet", "origin", "HEAD:main")
	if got, want := mustGit(t, apps, "ls-remote", "origin", "main"), mustGit(t, apps, "rev-parse", "HEAD"); !strings.HasPrefix(got, want) {
		t.Fatalf("main after the restart = %s, want %s", got, want)
	}
}

// TestHangingHost: a client's request gets no answer, and the host tells
// the connections the client holds from those it closed.
func TestHangingHost(t *testing.T) {
	h, err := StartHangingHost()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	c, err := net.Dial("tcp", strings.TrimPrefix(h.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET /apps.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Fatal("the hanging host answered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.Accepted() != 1 || h.Open() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("accepted %d, open %d; want 1 and 1", h.Accepted(), h.Open())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held, err := h.HeldBy(os.Getpid()); err != nil || held != 1 {
		t.Fatalf("this process holds %d connections to the host (%v), want 1", held, err)
	}
	other := exec.Command("sleep", "5")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if held, err := h.HeldBy(other.Process.Pid); err != nil || held != 0 {
		t.Fatalf("another process holds %d connections to the host (%v), want 0", held, err)
	}
	c.Close()
	for h.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("open %d after the client closed, want 0", h.Open())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNotificationCRDs renders notification-controller's CRDs with sluice's
// Flux component, as a user's Flux install does: the Alert CRD admits
// Delivery among its event source kinds, and nothing else changes.
func TestNotificationCRDs(t *testing.T) {
	bin, err := filepath.Abs(filepath.Join("..", "..", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	install, err := filepath.Abs(filepath.Join("..", "..", "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(bin, "share", "notification-controller", "bases")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("run hack/tools.sh notification-controller first: %v", err)
	}
	kinds := func(crds []*apiextensionsv1.CustomResourceDefinition) []string {
		for _, crd := range crds {
			if crd.Name != "alerts.notification.toolkit.fluxcd.io" {
				continue
			}
			var kinds []string
			for _, v := range crd.Spec.Versions {
				if !v.Served {
					continue
				}
				kind := v.Schema.OpenAPIV3Schema.Properties["spec"].Properties["eventSources"].Items.Schema.Properties["kind"]
				for _, e := range kind.Enum {
					kinds = append(kinds, v.Name+"/"+strings.Trim(string(e.Raw), `"`))
				}
			}
			return kinds
		}
		t.Fatal("no Alert CRD")
		return nil
	}

	upstream, err := readCRDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{Dir: t.TempDir(), opts: Options{BinDir: bin, InstallDir: install}}
	patched, err := s.notificationCRDs(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(patched) != len(upstream) {
		t.Fatalf("%d CRDs with the component, %d without", len(patched), len(upstream))
	}
	want := append(kinds(upstream), "v1beta3/Delivery")
	if got := kinds(patched); !slices.Equal(got, want) {
		t.Fatalf("the Alert's event source kinds are\n%v\nwant\n%v", got, want)
	}
}
