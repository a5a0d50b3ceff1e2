package gitops

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/e2e/stack"
)

// Size of the repository BenchmarkBigRepository writes to.
const (
	bigRepoFiles   = 10000
	bigRepoCommits = 5000
)

// BenchmarkBigRepository times sluice's writes to a repository of 10,000
// files and 5,000 commits served over smart HTTP, against the git CLI
// doing the same in the same run: the first write (a clone, a commit, a
// push) and a steady-state write (a fetch, a commit, a push). Compare the
// ratios of one run; the machine's noise cancels out.
func BenchmarkBigRepository(b *testing.B) {
	server, url, authURL := benchRepository(b)
	started := time.Now()
	if err := fillRepository(filepath.Join(server.Root, "fleet.git")); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d files in %d commits in %s", bigRepoFiles, bigRepoCommits, time.Since(started).Round(time.Millisecond))
	src := Source{URL: url, Branch: "main", Credentials: Credentials{Username: user, Password: password}}
	author := Signature{Name: "sluice", Email: "sluice@example.com"}
	n := 0
	change := func() Change {
		n++
		return Change{Branch: "main", Message: fmt.Sprintf("write %d", n), Author: author,
			Edit: setFile("apps/bench/write.yaml", strconv.Itoa(n)+"\n")}
	}
	gitWrite := func(dir string) {
		n++
		if err := os.MkdirAll(filepath.Join(dir, "apps", "bench"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "apps", "bench", "write.yaml"), []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		gitCLI(b, dir, "add", "-A")
		gitCLI(b, dir, "commit", "--quiet", "-m", fmt.Sprintf("write %d", n))
		gitCLI(b, dir, "push", "--quiet", "origin", "HEAD:main")
	}

	b.Run("first/sluice", func(b *testing.B) {
		for b.Loop() {
			repos := NewRepositories(b.TempDir(), WithCredentialsOverHTTP())
			if res, err := repos.Write(context.Background(), src, change()); err != nil || !res.Pushed {
				b.Fatalf("Write = %+v, %v", res, err)
			}
		}
	})
	b.Run("first/git", func(b *testing.B) {
		for b.Loop() {
			dir := filepath.Join(b.TempDir(), "fleet")
			gitCLI(b, "", "clone", "--quiet", authURL, dir)
			gitWrite(dir)
		}
	})
	repos := NewRepositories(b.TempDir(), WithCredentialsOverHTTP())
	if _, err := repos.Write(context.Background(), src, change()); err != nil {
		b.Fatal(err)
	}
	b.Run("steady/sluice", func(b *testing.B) {
		for b.Loop() {
			if res, err := repos.Write(context.Background(), src, change()); err != nil || !res.Pushed {
				b.Fatalf("Write = %+v, %v", res, err)
			}
		}
	})
	dir := filepath.Join(b.TempDir(), "fleet")
	gitCLI(b, "", "clone", "--quiet", authURL, dir)
	b.Run("steady/git", func(b *testing.B) {
		for b.Loop() {
			gitCLI(b, dir, "fetch", "--quiet", "origin")
			gitCLI(b, dir, "reset", "--quiet", "--hard", "origin/main")
			gitWrite(dir)
		}
	})
}

// benchRepository serves an empty repository fleet over smart HTTP for
// the benchmark, and returns its server, its URL and its URL with the
// credentials in it, for the git CLI.
func benchRepository(b *testing.B) (server *stack.GitServer, url, authURL string) {
	server, err := stack.StartGitServer(filepath.Join(b.TempDir(), "repos"), user, password)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = server.Close() })
	if url, err = server.CreateRepository("fleet"); err != nil {
		b.Fatal(err)
	}
	return server, url, fmt.Sprintf("http://%s:%s@%s/fleet.git", user, password, server.URL[len("http://"):])
}

// gitCLI runs the git CLI in dir, as the benchmark's other writer.
func gitCLI(b *testing.B, dir string, args ...string) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=git", "-c", "user.email=git@example.com"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// fillRepository writes bigRepoFiles files and bigRepoCommits commits to
// the bare repository at dir with git fast-import: the first commit adds
// every file, each later one changes one.
func fillRepository(dir string) error {
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = dir
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriter(in)
	when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for c := 1; c <= bigRepoCommits; c++ {
		msg := fmt.Sprintf("change %d", c)
		fmt.Fprintf(w, "commit refs/heads/main\ncommitter A User <user@example.com> %d +0000\ndata %d\n%s\n", when+int64(c), len(msg), msg)
		file := func(i int, rev int) {
			content := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-%d\n  namespace: team-%d\ndata:\n  revision: %q\n", i, i%100, strconv.Itoa(rev))
			fmt.Fprintf(w, "M 100644 inline apps/team-%d/config-%d.yaml\ndata %d\n%s\n", i%100, i, len(content), content)
		}
		if c == 1 {
			for i := 0; i < bigRepoFiles; i++ {
				file(i, 0)
			}
		} else {
			file(c%bigRepoFiles, c)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := in.Close(); err != nil {
		return err
	}
	return cmd.Wait()
}
