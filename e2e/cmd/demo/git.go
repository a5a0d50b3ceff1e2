package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// clone is the user's working copy of the GitOps repository. Everything
// the demo changes goes through it: edit, commit, push, as a person would.
type clone struct {
	dir string
	out io.Writer // where the user's commands are echoed
}

// cloneRepository clones repoURL into dir, with the credentials in the URL.
func cloneRepository(ctx context.Context, repoURL, username, password, dir string, out io.Writer) (*clone, error) {
	u, err := url.Parse(repoURL)
	if err != nil {
		return nil, err
	}
	u.User = url.UserPassword(username, password)
	if _, err := runGit(ctx, "", "clone", "--quiet", u.String(), dir); err != nil {
		return nil, err
	}
	return &clone{dir: dir, out: out}, nil
}

// runGit runs git as the demo's user, in dir when given.
func runGit(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "user.name=Dana", "-c", "user.email=dana@example.com"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// git runs git in the working copy without echoing it: for looking.
func (c *clone) git(ctx context.Context, args ...string) (string, error) {
	return runGit(ctx, c.dir, args...)
}

// do runs git in the working copy and echoes it, as the user's own command.
func (c *clone) do(ctx context.Context, args ...string) (string, error) {
	fmt.Fprintf(c.out, "      $ git %s\n", quoteArgs(args))
	return c.git(ctx, args...)
}

func quoteArgs(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted[i] = a
	}
	return strings.Join(quoted, " ")
}

// write writes files (path → content) into the working copy.
func (c *clone) write(files map[string]string) error {
	for path, content := range files {
		full := filepath.Join(c.dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// edit replaces from with to in a file of the working copy, once, and says
// so: the change a user makes in an editor.
func (c *clone) edit(path, from, to string) error {
	full := filepath.Join(c.dir, path)
	data, err := os.ReadFile(full)
	if err != nil {
		return err
	}
	if !strings.Contains(string(data), from) {
		return fmt.Errorf("%s does not contain %q", path, from)
	}
	fmt.Fprintf(c.out, "      (edit %s)\n", path)
	return os.WriteFile(full, []byte(strings.Replace(string(data), from, to, 1)), 0o644)
}

// pull brings the working copy up to date with main, sluice's commits
// included.
func (c *clone) pull(ctx context.Context) error {
	_, err := c.do(ctx, "pull", "--quiet", "--rebase=merges", "origin", "main")
	return err
}

// commit commits everything in the working copy.
func (c *clone) commit(ctx context.Context, message string) error {
	if _, err := c.do(ctx, "add", "-A"); err != nil {
		return err
	}
	_, err := c.do(ctx, "commit", "--quiet", "-m", message)
	return err
}

// push pushes main. When someone (sluice) pushed first, it pulls, as a user
// would, and pushes again.
func (c *clone) push(ctx context.Context) (string, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = c.do(ctx, "push", "--quiet", "origin", "HEAD:main"); err == nil {
			return c.git(ctx, "rev-parse", "--short", "HEAD")
		}
		if pullErr := c.pull(ctx); pullErr != nil {
			return "", pullErr
		}
	}
	return "", err
}

// commitAndPush commits everything and pushes it; it returns the commit.
func (c *clone) commitAndPush(ctx context.Context, message string) (string, error) {
	if err := c.commit(ctx, message); err != nil {
		return "", err
	}
	return c.push(ctx)
}

// merge merges a branch of the Git server into main with a subject and
// pushes: approving a gate, as merging a pull request would.
func (c *clone) merge(ctx context.Context, branch, subject string) (string, error) {
	if err := c.pull(ctx); err != nil {
		return "", err
	}
	if _, err := c.do(ctx, "fetch", "--quiet", "origin", branch); err != nil {
		return "", err
	}
	if _, err := c.do(ctx, "merge", "--quiet", "--no-ff", "-m", subject, "-m", "Merge "+branch+".", "FETCH_HEAD"); err != nil {
		return "", err
	}
	return c.push(ctx)
}

// server is the bare repository on the Git server. The demo watches it for
// sluice's commits and branches, the way the e2e suite does; the user's
// clone only sees them once it pulls.
type server struct {
	dir string
}

func (s server) git(ctx context.Context, args ...string) (string, error) {
	return runGit(ctx, "", append([]string{"--git-dir", s.dir}, args...)...)
}

// sluiceCommit returns the newest commit on main whose trailers say that
// sluice did action to namespace/app (and, when hash is set, to that
// template), or an error that says what main holds instead.
func (s server) sluiceCommit(ctx context.Context, app, action, hash string) (string, error) {
	args := []string{"log", "-1", "--format=%h", "--fixed-strings", "--all-match",
		"--grep", fmt.Sprintf("Sluice-Delivery: %s/%s", namespace, app),
		"--grep", "Sluice-Action: " + action}
	if hash != "" {
		args = append(args, "--grep", "Sluice-Template-Hash: "+hash)
	}
	commit, err := s.git(ctx, append(args, "main")...)
	if err != nil {
		return "", err
	}
	if commit == "" {
		head, _ := s.git(ctx, "log", "-1", "--format=%h %an: %s", "main")
		what := action
		if hash != "" {
			what += " of template " + hash
		}
		return "", fmt.Errorf("no %s commit for %s/%s on main yet (main is at %s)", what, namespace, app, head)
	}
	return commit, nil
}

// hasBranch reports whether the server has the branch.
func (s server) hasBranch(ctx context.Context, branch string) (bool, error) {
	out, err := s.git(ctx, "for-each-ref", "--format=%(refname)", "refs/heads/"+branch)
	return out != "", err
}

// branches lists the branches under prefix.
func (s server) branches(ctx context.Context, prefix string) ([]string, error) {
	out, err := s.git(ctx, "for-each-ref", "--format=%(refname:lstrip=2)", "refs/heads/"+prefix)
	if err != nil || out == "" {
		return nil, err
	}
	return strings.Split(out, "\n"), nil
}

// file returns a file of main, or "" when main has no such file.
func (s server) file(ctx context.Context, path string) (string, error) {
	if out, err := s.git(ctx, "ls-tree", "--name-only", "main", path); err != nil || out == "" {
		return "", err
	}
	return s.git(ctx, "show", "main:"+path)
}
