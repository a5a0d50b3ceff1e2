package gitops

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sluice-dev/sluice/e2e/stack"
)

// These tests push to a real Git server (git http-backend over smart HTTP on
// loopback) and check the result by cloning it with the git CLI.

const (
	user     = "sluice"
	password = "s3cret-password-1"
	token    = "s3cret-token-2"
)

type fixture struct {
	t      *testing.T
	server *stack.GitServer
	url    string
	repos  *Repositories
}

func newFixture(t *testing.T, files map[string]string) *fixture {
	t.Helper()
	server, err := stack.StartGitServer(filepath.Join(t.TempDir(), "repos"), user, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	url, err := server.CreateRepository("apps")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, server: server, url: url, repos: NewRepositories(t.TempDir(), WithRetries(5, 10*time.Millisecond), WithCredentialsOverHTTP())}
	work := f.clone()
	for path, content := range files {
		writeTestFile(t, filepath.Join(work, path), content)
	}
	f.git(work, "add", "-A")
	f.git(work, "commit", "-q", "-m", "Initial commit")
	f.git(work, "push", "-q", "origin", "HEAD:main")
	return f
}

func (f *fixture) source() Source {
	return Source{URL: f.url, Branch: "main", Credentials: Credentials{Username: user, Password: password}}
}

// clone clones the repository with the git CLI, as a user would.
func (f *fixture) clone() string {
	f.t.Helper()
	u, _ := url.Parse(f.url)
	u.User = url.UserPassword(user, password)
	dir := filepath.Join(f.t.TempDir(), "clone")
	f.git("", "clone", "-q", u.String(), dir)
	return dir
}

func (f *fixture) git(dir string, args ...string) string {
	f.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=A User", "-c", "user.email=user@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// pushTheirs commits everything in the clone dir as another writer's
// change, "their change", and pushes it to main.
func (f *fixture) pushTheirs(dir string) {
	f.t.Helper()
	f.git(dir, "add", "-A")
	f.git(dir, "commit", "-q", "-m", "their change")
	f.git(dir, "push", "-q", "origin", "HEAD:main")
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setFile is an edit that makes path say content.
func setFile(path, content string) func(string) (bool, error) {
	return func(root string) (bool, error) {
		full := filepath.Join(root, path)
		if old, err := os.ReadFile(full); err == nil && string(old) == content {
			return false, nil
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, err
		}
		return true, os.WriteFile(full, []byte(content), 0o644)
	}
}

func TestWriteCommitsAndPushes(t *testing.T) {
	f := newFixture(t, map[string]string{"apps/web.yaml": "kind: Deployment\n"})
	ctx := context.Background()

	change := Change{
		Branch:  "main",
		Message: "Adopt web\n\nDelivery: apps/web",
		Author:  Signature{Name: "sluice", Email: "sluice@example.com"},
		Edit:    setFile("apps/delivery.yaml", "kind: Delivery\n"),
	}
	res, err := f.repos.Write(ctx, f.source(), change)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pushed || len(res.Commit) != 40 {
		t.Fatalf("Write = %+v, want a pushed commit", res)
	}

	clone := f.clone()
	if got := f.git(clone, "rev-parse", "HEAD"); got != res.Commit {
		t.Fatalf("main is at %s, want the pushed %s", got, res.Commit)
	}
	if got := f.git(clone, "log", "-1", "--format=%an <%ae>|%cn|%B"); got != "sluice <sluice@example.com>|sluice|Adopt web\n\nDelivery: apps/web" {
		t.Fatalf("commit = %q", got)
	}
	if data, _ := os.ReadFile(filepath.Join(clone, "apps", "delivery.yaml")); string(data) != "kind: Delivery\n" {
		t.Fatalf("apps/delivery.yaml = %q", data)
	}

	// The branch already says it: no second commit.
	again, err := f.repos.Write(ctx, f.source(), change)
	if err != nil {
		t.Fatal(err)
	}
	if again.Pushed || again.Commit != res.Commit {
		t.Fatalf("second Write = %+v, want nothing pushed and head %s", again, res.Commit)
	}
	if n := f.git(f.clone(), "rev-list", "--count", "HEAD"); n != "2" {
		t.Fatalf("main has %s commits, want 2", n)
	}
}

func TestWriteRetriesOnTheNewHeadWhenAnotherWriterPushedFirst(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	testWriteRetriesOnTheNewHead(t, f, "first\nInitial commit")
}

// With history beyond the working copy's depth, go-git cannot walk down
// to the moved head and says "object not found" rather than
// "non-fast-forward": the branch moved all the same.
func TestWriteRetriesOnTheNewHeadOverAShallowWorkingCopy(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	work := f.clone()
	writeTestFile(t, filepath.Join(work, "README.md"), "apps, and more\n")
	f.git(work, "commit", "-q", "-am", "Second commit")
	f.git(work, "push", "-q", "origin", "HEAD:main")
	testWriteRetriesOnTheNewHead(t, f, "first\nSecond commit\nInitial commit")
}

// testWriteRetriesOnTheNewHead has another writer push while sluice edits,
// and checks that sluice's change lands on top of theirs, over history.
func testWriteRetriesOnTheNewHead(t *testing.T, f *fixture, history string) {
	ctx := context.Background()
	// Warm the working copy so that the next write starts from a head that
	// is about to be stale.
	if _, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "first", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("a.yaml", "a\n")}); err != nil {
		t.Fatal(err)
	}

	other := f.clone()
	edits := 0
	change := Change{
		Branch: "main", Message: "sluice's change", Author: Signature{Name: "s", Email: "s@x"},
		Edit: func(root string) (bool, error) {
			edits++
			if edits == 1 {
				// Someone pushes while sluice is editing.
				writeTestFile(t, filepath.Join(other, "theirs.yaml"), "theirs\n")
				f.pushTheirs(other)
			}
			return setFile("ours.yaml", "ours\n")(root)
		},
	}
	res, err := f.repos.Write(ctx, f.source(), change)
	if err != nil {
		t.Fatal(err)
	}
	if edits != 2 {
		t.Fatalf("the edit ran %d times, want 2 (once more on the new head)", edits)
	}
	clone := f.clone()
	log := f.git(clone, "log", "--format=%s")
	if log != "sluice's change\ntheir change\n"+history {
		t.Fatalf("history:\n%s", log)
	}
	if got := f.git(clone, "rev-parse", "HEAD"); got != res.Commit {
		t.Fatalf("head %s, want %s", got, res.Commit)
	}
}

func TestWriteToANewBranch(t *testing.T) {
	f := newFixture(t, map[string]string{"apps/delivery.yaml": "approvals: []\n"})
	res, err := f.repos.Write(context.Background(), f.source(), Change{
		Branch: "sluice/promote/apps/web/1-abc", From: "main",
		Message: "Approve web", Author: Signature{Name: "s", Email: "s@x"},
		Edit: setFile("apps/delivery.yaml", "approvals: [abc]\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	clone := f.clone()
	f.git(clone, "fetch", "-q", "origin", "sluice/promote/apps/web/1-abc")
	if got := f.git(clone, "rev-parse", "FETCH_HEAD"); got != res.Commit {
		t.Fatalf("branch at %s, want %s", got, res.Commit)
	}
	if got := f.git(clone, "rev-parse", "FETCH_HEAD~1"); got != f.git(clone, "rev-parse", "origin/main") {
		t.Fatalf("the branch does not start from main")
	}
}

func TestWriteWithABearerToken(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	f.server.Token = token
	src := f.source()
	src.Credentials = Credentials{BearerToken: token}
	res, err := NewRepositories(t.TempDir(), WithCredentialsOverHTTP()).Write(context.Background(), src, Change{
		Branch: "main", Message: "with a token", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("t.yaml", "t\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.git(f.clone(), "rev-parse", "HEAD"); got != res.Commit {
		t.Fatalf("head %s, want %s", got, res.Commit)
	}
}

// TestCredentialsAreNotSentOverPlainHTTP: a password or a token for an
// http:// URL is refused before anything is sent, and says how to go on;
// an anonymous write to the same URL is not.
func TestCredentialsAreNotSentOverPlainHTTP(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	var requests atomic.Int32
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "authentication required", http.StatusUnauthorized)
	}))
	t.Cleanup(listener.Close)
	repos := NewRepositories(t.TempDir())
	for _, c := range []Credentials{{Username: user, Password: password}, {BearerToken: token}} {
		src := Source{URL: listener.URL + "/apps.git", Branch: "main", Credentials: c}
		_, err := repos.Write(context.Background(), src, Change{Branch: "main", Edit: setFile("x.yaml", "x\n")})
		if !errors.Is(err, ErrInsecureCredentials) || !strings.Contains(err.Error(), "https://") {
			t.Fatalf("Write with %+v = %v, want ErrInsecureCredentials saying what to use", c, err)
		}
		if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), token) {
			t.Fatalf("the error shows the secret: %v", err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}

	// Told that clear text is safe, the same write goes through.
	if _, err := NewRepositories(t.TempDir(), WithCredentialsOverHTTP()).Write(context.Background(), f.source(), Change{
		Branch: "main", Message: "m", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("x.yaml", "x\n"),
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWriteRefusedKeepsTheSecret(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	f.server.ReadOnlyUsername, f.server.ReadOnlyPassword = "reader", "read-only-s3cret"
	src := f.source()
	src.Credentials = Credentials{Username: "reader", Password: "read-only-s3cret"}
	_, err := NewRepositories(t.TempDir(), WithCredentialsOverHTTP()).Write(context.Background(), src, Change{
		Branch: "main", Message: "m", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("x.yaml", "x\n"),
	})
	if !errors.Is(err, ErrPushRefused) {
		t.Fatalf("Write = %v, want ErrPushRefused", err)
	}
	if strings.Contains(err.Error(), "read-only-s3cret") {
		t.Fatalf("the error shows the password: %v", err)
	}
	if n := f.git(f.clone(), "rev-list", "--count", "HEAD"); n != "1" {
		t.Fatalf("main has %s commits, want 1", n)
	}
}

// TestWriteWithCredentialsInTheURL: a GitRepository URL that holds its
// credentials works, and the token reaches neither errors nor the working
// copy on disk.
func TestWriteWithCredentialsInTheURL(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	dir := t.TempDir()
	repos := NewRepositories(dir, WithCredentialsOverHTTP())
	withUserinfo := func(repoURL, pass string) Source {
		u, _ := url.Parse(repoURL)
		u.User = url.UserPassword(user, pass)
		return Source{URL: u.String(), Branch: "main"}
	}
	res, err := repos.Write(context.Background(), withUserinfo(f.url, password), Change{
		Branch: "main", Message: "m", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("x.yaml", "x\n"),
	})
	if err != nil || !res.Pushed {
		t.Fatalf("Write = %+v, %v", res, err)
	}
	_, err = repos.Write(context.Background(), withUserinfo(f.server.RepositoryURL("missing"), password), Change{Branch: "main", Edit: setFile("x", "x")})
	if err == nil || strings.Contains(err.Error(), password) {
		t.Fatalf("Write to a missing repository = %v; want an error without the password", err)
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err == nil && bytes.Contains(data, []byte(password)) {
			t.Errorf("%s holds the password", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriteToAnUnreachableRepository(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	src := f.source()
	src.URL = f.server.RepositoryURL("missing")
	_, err := f.repos.Write(context.Background(), src, Change{Branch: "main", Edit: setFile("x", "x")})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Write = %v, want ErrUnreachable", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatalf("the error shows the password: %v", err)
	}
}

func TestWriteSignsCommits(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	entity, err := openpgp.NewEntity("sluice", "", "sluice@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var private, public bytes.Buffer
	w, _ := armor.Encode(&private, openpgp.PrivateKeyType, nil)
	if err := entity.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, _ = armor.Encode(&public, openpgp.PublicKeyType, nil)
	if err := entity.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()

	res, err := f.repos.Write(context.Background(), f.source(), Change{
		Branch: "main", Message: "signed", Author: Signature{Name: "sluice", Email: "sluice@example.com"},
		Edit: setFile("s.yaml", "s\n"), SigningKey: private.Bytes(),
	})
	if err != nil {
		t.Fatal(err)
	}

	// git itself verifies the signature with the public key.
	gnupg := t.TempDir()
	if err := os.Chmod(gnupg, 0o700); err != nil {
		t.Fatal(err)
	}
	imp := exec.Command("gpg", "--batch", "--import")
	imp.Env = append(os.Environ(), "GNUPGHOME="+gnupg)
	imp.Stdin = &public
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("gpg --import: %v\n%s", err, out)
	}
	clone := f.clone()
	verify := exec.Command("git", "verify-commit", "--raw", res.Commit)
	verify.Dir = clone
	verify.Env = append(os.Environ(), "GNUPGHOME="+gnupg)
	out, err := verify.CombinedOutput()
	if err != nil {
		t.Fatalf("git verify-commit: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "GOODSIG") {
		t.Fatalf("no good signature:\n%s", out)
	}
}

func TestWriteOverSSH(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	public, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPublic, err := ssh.NewPublicKey(public)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(private, "")
	if err != nil {
		t.Fatal(err)
	}
	server, err := stack.StartSSHServer(f.server.Root, sshPublic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })

	src := Source{URL: server.RepositoryURL("apps"), Branch: "main", Credentials: Credentials{
		Identity: pem.EncodeToMemory(block), KnownHosts: []byte(server.KnownHosts),
	}}
	res, err := NewRepositories(t.TempDir()).Write(context.Background(), src, Change{
		Branch: "main", Message: "over ssh", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("ssh.yaml", "ssh\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.git(f.clone(), "rev-parse", "HEAD"); got != res.Commit {
		t.Fatalf("head %s, want %s", got, res.Commit)
	}

	// A host key other than the one in known_hosts is refused.
	_, otherHost, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(otherHost)
	src.Credentials.KnownHosts = []byte(knownhosts.Line([]string{knownhosts.Normalize(strings.TrimPrefix(server.URL, "ssh://git@"))}, otherSigner.PublicKey()))
	if _, err := NewRepositories(t.TempDir()).Write(context.Background(), src, Change{Branch: "main", Edit: setFile("x", "x")}); err == nil {
		t.Fatal("a server whose host key is not in known_hosts was trusted")
	}
}

func TestWriteAfterACrashBetweenCommitAndPush(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	dir := t.TempDir()
	repos := NewRepositories(dir, WithCredentialsOverHTTP())
	change := Change{Branch: "main", Message: "sluice's change", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("a.yaml", "a\n")}
	// Warm the working copy, then leave a commit in it that never reached
	// the server, as a crash after commit and before push would.
	if _, err := repos.Write(context.Background(), f.source(), Change{Branch: "main", Message: "warm", Author: change.Author, Edit: setFile("w.yaml", "w\n")}); err != nil {
		t.Fatal(err)
	}
	copies, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(copies) != 1 {
		t.Fatalf("want one working copy, got %v", copies)
	}
	writeTestFile(t, filepath.Join(copies[0], "a.yaml"), "a\n")
	f.git(copies[0], "add", "-A")
	f.git(copies[0], "commit", "-q", "-m", "sluice's change")
	// The restart forgets which commit the working copy held.
	touched(copies[0])

	// After the restart, the same intent gives one commit, pushed once.
	if _, err := NewRepositories(dir, WithCredentialsOverHTTP()).Write(context.Background(), f.source(), change); err != nil {
		t.Fatal(err)
	}
	clone := f.clone()
	if log := f.git(clone, "log", "--format=%s"); log != "sluice's change\nwarm\nInitial commit" {
		t.Fatalf("history:\n%s", log)
	}
}

func TestWritesWaitingForTheSameBranchAreCoalesced(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	ctx := context.Background()
	author := Signature{Name: "sluice", Email: "sluice@example.com"}

	// A first write holds the repository while two more arrive.
	release, firstDone := holdRepository(t, f)

	results := make(chan Result, 2)
	for _, name := range []string{"a", "b"} {
		go func() {
			res, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "write " + name, Author: author,
				Edit: setFile(name+".yaml", name+"\n")})
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	waitPending(t, f.repos, 2)
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	a, b := <-results, <-results
	if a.Commit != b.Commit || !a.Pushed {
		t.Fatalf("the waiting writes got %+v and %+v, want one pushed commit", a, b)
	}
	clone := f.clone()
	if n := f.git(clone, "rev-list", "--count", "HEAD"); n != "3" {
		t.Fatalf("main has %s commits, want 3: initial, first, and one for both waiting writes", n)
	}
	if files := f.git(clone, "show", "--name-only", "--format=", "HEAD"); files != "a.yaml\nb.yaml" {
		t.Fatalf("the coalesced commit changes %q", files)
	}
	msg := f.git(clone, "log", "-1", "--format=%B")
	if !strings.HasPrefix(msg, "Record 2 changes") || !strings.Contains(msg, "write a") || !strings.Contains(msg, "write b") {
		t.Fatalf("message:\n%s", msg)
	}
}

// TestWriteAllMakesOneCommit: changes written together to one branch are
// one commit and one push; one whose change the branch already holds is
// told it pushed nothing.
func TestWriteAllMakesOneCommit(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n", "c.yaml": "c\n"})
	author := Signature{Name: "sluice", Email: "sluice@example.com"}
	var changes []Change
	for _, name := range []string{"a", "b", "c"} {
		changes = append(changes, Change{Branch: "main", Message: "write " + name, Author: author, Edit: setFile(name+".yaml", name+"\n")})
	}
	results, errs := f.repos.WriteAll(context.Background(), f.source(), changes)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
	}
	if results[0].Commit != results[1].Commit || !results[0].Pushed || !results[1].Pushed || results[2].Pushed {
		t.Fatalf("results %+v, want a and b pushed in one commit, c pushing nothing", results)
	}
	clone := f.clone()
	if n := f.git(clone, "rev-list", "--count", "HEAD"); n != "2" {
		t.Fatalf("main has %s commits, want 2: initial and one for the writes", n)
	}
	if msg := f.git(clone, "log", "-1", "--format=%B"); !strings.HasPrefix(msg, "Record 2 changes") || strings.Contains(msg, "write c") {
		t.Fatalf("message:\n%s", msg)
	}
}

// TestACoalescedWriteThatChangesNothingIsNotRecordedAgain: a write whose
// change the branch holds already (recorded by an earlier commit that its
// writer did not hear of) waits with one that changes something; the
// commit holds only the other's message, and the write that changed
// nothing is told it pushed nothing.
func TestACoalescedWriteThatChangesNothingIsNotRecordedAgain(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n", "done.yaml": "done\n"})
	ctx := context.Background()
	author := Signature{Name: "sluice", Email: "sluice@example.com"}

	release, firstDone := holdRepository(t, f)
	results := map[string]chan Result{"done": make(chan Result, 1), "new": make(chan Result, 1)}
	for name, res := range results {
		go func() {
			r, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "write " + name + "\n\nSluice-Action: " + name + "\n",
				Author: author, Edit: setFile(name+".yaml", name+"\n")})
			if err != nil {
				t.Error(err)
			}
			res <- r
		}()
	}
	waitPending(t, f.repos, 2)
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	done, added := <-results["done"], <-results["new"]
	if done.Pushed || !added.Pushed {
		t.Fatalf("the write that changed nothing got %+v, the other %+v; want only the other pushed", done, added)
	}
	clone := f.clone()
	if msg := f.git(clone, "log", "-1", "--format=%B"); msg != "write new\n\nSluice-Action: new" {
		t.Fatalf("message:\n%s", msg)
	}
	if log := f.git(clone, "log", "--format=%B"); strings.Contains(log, "write done") {
		t.Fatalf("the change that was in Git already is recorded again:\n%s", log)
	}
}

// TestACoalescedWriteWhoseEditFailsDoesNotFailTheOthers: the failing edit
// gets its error, the other writes of its batch land.
func TestACoalescedWriteWhoseEditFailsDoesNotFailTheOthers(t *testing.T) {
	for _, failure := range []struct {
		name string
		fail func() (bool, error)
	}{
		{"error", func() (bool, error) { return false, fmt.Errorf("%w: a patch sets the field", ErrCannotEdit) }},
		// A YAML library's Must call on input it did not expect.
		{"panic", func() (bool, error) { panic("yaml: MustString on a broken node") }},
	} {
		t.Run(failure.name, func(t *testing.T) {
			testCoalescedFailure(t, failure.fail)
		})
	}
}

func testCoalescedFailure(t *testing.T, fail func() (bool, error)) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	ctx := context.Background()
	author := Signature{Name: "sluice", Email: "sluice@example.com"}

	release, firstDone := holdRepository(t, f)

	type outcome struct {
		name string
		res  Result
		err  error
	}
	outcomes := make(chan outcome, 2)
	edits := map[string]func(string) (bool, error){
		"good": setFile("good.yaml", "good\n"),
		"bad": func(root string) (bool, error) {
			if _, err := setFile("half.yaml", "half-written\n")(root); err != nil {
				return false, err
			}
			return fail()
		},
	}
	for name, edit := range edits {
		go func() {
			res, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "write " + name, Author: author, Edit: edit})
			outcomes <- outcome{name, res, err}
		}()
	}
	waitPending(t, f.repos, 2)
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case o := <-outcomes:
			switch o.name {
			case "good":
				if o.err != nil || !o.res.Pushed {
					t.Errorf("the good write got %+v, %v; want it pushed", o.res, o.err)
				}
			case "bad":
				if !errors.Is(o.err, ErrCannotEdit) {
					t.Errorf("the bad write got %v, want ErrCannotEdit", o.err)
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a write of the batch is still waiting")
		}
	}
	clone := f.clone()
	if files := f.git(clone, "show", "--name-only", "--format=%s", "HEAD"); files != "write good\n\ngood.yaml" {
		t.Fatalf("the last commit is %q, want the good write alone", files)
	}
	if _, err := os.Stat(filepath.Join(clone, "half.yaml")); !os.IsNotExist(err) {
		t.Fatalf("the failing edit's half-written file reached Git: %v", err)
	}
	// The repository is not held: the next write goes through.
	if res, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "after", Author: author, Edit: setFile("after.yaml", "after\n")}); err != nil || !res.Pushed {
		t.Fatalf("the write after the failure got %+v, %v", res, err)
	}
}

// waitPending waits until n writes wait for a repository of repos.
func waitPending(t *testing.T, repos *Repositories, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		repos.mu.Lock()
		got := 0
		for _, p := range repos.pending {
			got += len(p)
		}
		repos.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes pending, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLocked waits until a write holds the repository at url.
func waitLocked(t *testing.T, repos *Repositories, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		repos.mu.Lock()
		held := len(repos.locks[url]) == 1
		repos.mu.Unlock()
		if held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write holds %s", url)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holdRepository starts a write that holds f's repository until release is
// closed, and returns once it holds it; firstDone gets the write's error.
func holdRepository(t *testing.T, f *fixture) (release chan struct{}, firstDone <-chan error) {
	t.Helper()
	release, started, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := f.repos.Write(context.Background(), f.source(), Change{Branch: "main", Message: "first",
			Author: Signature{Name: "sluice", Email: "sluice@example.com"},
			Edit: func(root string) (bool, error) {
				close(started)
				<-release
				return setFile("first.yaml", "1\n")(root)
			}})
		done <- err
	}()
	<-started
	return release, done
}

// TestPruneBranchesDeletesOnlyWhatSluicePushedForTheDelivery: a template's
// prefix names people's branches, other Deliveries' and the tracked one;
// only the branches whose head is an approval sluice pushed for the
// Delivery go.
func TestPruneBranchesDeletesOnlyWhatSluicePushedForTheDelivery(t *testing.T) {
	f := newFixture(t, map[string]string{"apps/delivery.yaml": "approvals: []\n"})
	ctx := context.Background()
	approve := func(branch, delivery string) {
		t.Helper()
		_, err := f.repos.Write(ctx, f.source(), Change{
			Branch: branch, From: "main", Author: Signature{Name: "sluice", Email: "s@x"},
			Message: "Approve " + delivery + "\n\nSluice-Delivery: apps/" + delivery + "\nSluice-Action: approve\n",
			Edit:    setFile("apps/delivery.yaml", "approvals: ["+branch+"]\n"),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	approve("release/api-1-aaa", "api")
	approve("release/api-2-bbb", "api")
	approve("release/api-v2-1-ccc", "api-v2")
	// A person's branch under the same prefix, and one that copies
	// sluice's message but whose head is the person's next commit.
	work := f.clone()
	f.git(work, "checkout", "-q", "-b", "release/api-hotfix")
	writeTestFile(t, filepath.Join(work, "hotfix"), "x\n")
	f.git(work, "add", "-A")
	f.git(work, "commit", "-q", "-m", "Hotfix")
	f.git(work, "push", "-q", "origin", "release/api-hotfix")
	f.git(work, "fetch", "-q", "origin", "release/api-1-aaa")
	f.git(work, "checkout", "-q", "-b", "release/api-3-ddd", "FETCH_HEAD")
	writeTestFile(t, filepath.Join(work, "more"), "y\n")
	f.git(work, "add", "-A")
	f.git(work, "commit", "-q", "-m", "Build on sluice's approval")
	f.git(work, "push", "-q", "origin", "release/api-3-ddd")

	owned := func(message string) bool {
		return strings.Contains(message, "\nSluice-Delivery: apps/api\n") && strings.Contains(message, "\nSluice-Action: approve\n")
	}
	deleted, err := f.repos.PruneBranches(ctx, f.source(), owned, "release/api-2-bbb", "main")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(deleted, ",") != "release/api-1-aaa" {
		t.Errorf("deleted %v, want release/api-1-aaa only", deleted)
	}
	heads := f.git(work, "ls-remote", "--heads", "origin")
	for _, want := range []string{"refs/heads/main", "refs/heads/release/api-2-bbb", "refs/heads/release/api-v2-1-ccc", "refs/heads/release/api-hotfix", "refs/heads/release/api-3-ddd"} {
		if !strings.Contains(heads, want+"\n") && !strings.HasSuffix(heads, want) {
			t.Errorf("%s was deleted:\n%s", want, heads)
		}
	}
	if strings.Contains(heads, "release/api-1-aaa") {
		t.Errorf("release/api-1-aaa is still there:\n%s", heads)
	}
}

// TestAHangingHostHoldsOnlyItsOwnWrites: a Git host that accepts
// connections and never answers fails its writes at the source's timeout,
// a write queued behind it gives up at its own deadline, and writes to
// another repository go on meanwhile.
func TestAHangingHostHoldsOnlyItsOwnWrites(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := listener.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	hanging := Source{URL: "http://" + listener.Addr().String() + "/apps.git", Branch: "main", Timeout: 2 * time.Second}
	change := Change{Branch: "main", Message: "m", Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("x.yaml", "x\n")}

	first := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := f.repos.Write(context.Background(), hanging, change)
		first <- err
	}()
	waitLocked(t, f.repos, hanging.URL)
	// Queued behind the hanging write, with a deadline of its own.
	queued, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	other := change
	other.Message = "another"
	if _, err := f.repos.Write(queued, hanging, other); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the queued write got %v, want its deadline", err)
	}
	// Another repository is written to meanwhile.
	res, err := f.repos.Write(context.Background(), f.source(), change)
	if err != nil || !res.Pushed {
		t.Fatalf("the write to another repository got %+v, %v", res, err)
	}
	select {
	case err := <-first:
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("the write to the hanging host got %v, want ErrUnreachable", err)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("the write to the hanging host took %s; its timeout is 2s", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the write to the hanging host never ended")
	}
}

// TestABrokenWorkingCopyIsClonedAgain: a working copy that lost its
// objects (a crash, a full disk), or a clone a crash left half-written, is
// a cache: the next write clones again and lands.
func TestABrokenWorkingCopyIsClonedAgain(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(t *testing.T, dotGit string)
	}{
		{"objects lost", func(t *testing.T, dotGit string) {
			if err := os.RemoveAll(filepath.Join(dotGit, "objects")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dotGit, "objects", "pack"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"an object truncated", func(t *testing.T, dotGit string) {
			// The head's commit reads, its tree does not: as a fetch
			// killed while it wrote objects leaves a working copy.
			out, err := exec.Command("git", "--git-dir", dotGit, "rev-parse", "HEAD^{tree}").Output()
			if err != nil {
				t.Fatal(err)
			}
			tree := strings.TrimSpace(string(out))
			object := filepath.Join(dotGit, "objects", tree[:2], tree[2:])
			info, err := os.Stat(object)
			if err != nil {
				t.Fatalf("the head's tree is not a loose object: %v", err)
			}
			if err := os.Truncate(object, info.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"a ref file emptied", func(t *testing.T, dotGit string) {
			// As a fetch killed while it wrote the ref leaves it.
			ref := filepath.Join(dotGit, "refs", "remotes", "origin", "sluice", "gone")
			if err := os.MkdirAll(filepath.Dir(ref), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(ref, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"clone half-written", func(t *testing.T, dotGit string) {
			if err := os.Remove(filepath.Join(dotGit, cloneComplete)); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(dotGit, "refs")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(damage.name, func(t *testing.T) {
			f := newFixture(t, map[string]string{"README.md": "apps\n"})
			ctx := context.Background()
			author := Signature{Name: "sluice", Email: "sluice@example.com"}
			if _, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "one", Author: author, Edit: setFile("one.yaml", "1\n")}); err != nil {
				t.Fatal(err)
			}
			damage.do(t, filepath.Join(f.repos.workingCopy(f.source()), ".git"))
			res, err := f.repos.Write(ctx, f.source(), Change{Branch: "main", Message: "two", Author: author, Edit: setFile("two.yaml", "2\n")})
			if err != nil || !res.Pushed {
				t.Fatalf("the write after the damage got %+v, %v", res, err)
			}
			if log := f.git(f.clone(), "log", "--format=%s"); log != "two\none\nInitial commit" {
				t.Fatalf("main's history is\n%s", log)
			}
		})
	}
}

// TestWritesAreMeasured: each write lands in the write-duration histogram
// by outcome.
func TestWritesAreMeasured(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	pushed := func() uint64 {
		m := &dto.Metric{}
		if err := writeDuration.WithLabelValues("pushed").(prometheus.Histogram).Write(m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	before := pushed()
	if _, err := f.repos.Write(context.Background(), f.source(), Change{Branch: "main", Message: "m",
		Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("x.yaml", "x\n")}); err != nil {
		t.Fatal(err)
	}
	if got := pushed(); got != before+1 {
		t.Fatalf("%d pushed writes measured, want %d", got, before+1)
	}
}

// TestRemoteOperationsAreCounted: the first write clones, fetches and
// pushes; a write that changes nothing only fetches.
func TestRemoteOperationsAreCounted(t *testing.T) {
	f := newFixture(t, map[string]string{"README.md": "apps\n"})
	count := func(operation string) float64 {
		return testutil.ToFloat64(remoteOperations.WithLabelValues(operation, "succeeded"))
	}
	counts := func() [3]float64 { return [3]float64{count("clone"), count("fetch"), count("push")} }
	write := func() {
		t.Helper()
		if _, err := f.repos.Write(context.Background(), f.source(), Change{Branch: "main", Message: "m",
			Author: Signature{Name: "s", Email: "s@x"}, Edit: setFile("x.yaml", "x\n")}); err != nil {
			t.Fatal(err)
		}
	}
	before := counts()
	write()
	if got, want := counts(), [3]float64{before[0] + 1, before[1] + 1, before[2] + 1}; got != want {
		t.Fatalf("clones, fetches, pushes after a first write = %v, want %v", got, want)
	}
	before = counts()
	write()
	if got, want := counts(), [3]float64{before[0], before[1] + 1, before[2]}; got != want {
		t.Fatalf("clones, fetches, pushes after a write that changes nothing = %v, want %v", got, want)
	}
}

// TestPrivateDir: the working copies' folder is sluice's alone; a link in
// its place is refused.
func TestPrivateDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "git")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("the folder's mode is %v (%v), want 0700", info.Mode().Perm(), err)
	}
	link := filepath.Join(parent, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(link); err == nil {
		t.Fatal("a link was taken for the working copies' folder")
	}
}

// TestRetriesAreJittered: retry waits spread over half to one and a half
// times the backoff, so that writers that lost the same race part.
func TestRetriesAreJittered(t *testing.T) {
	const d = 200 * time.Millisecond
	seen := map[time.Duration]bool{}
	for range 100 {
		got := jittered(d)
		if got < d/2 || got > d+d/2 {
			t.Fatalf("jittered(%s) = %s, want within [%s, %s]", d, got, d/2, d+d/2)
		}
		seen[got] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 jittered waits took only %d values", len(seen))
	}
}
