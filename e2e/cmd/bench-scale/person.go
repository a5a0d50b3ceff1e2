package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// personFile is the file the person edits: in the repository, in no
// Kustomization's folder, so each of their commits is one more revision
// for every Kustomization to apply and changes nothing sluice delivers.
const personFile = fleetDir + "/CHANGELOG.md"

// startPerson has a person push from the clone in dir every interval until
// the returned stop, which returns the commits they pushed.
func startPerson(ctx context.Context, dir string, every time.Duration) (stop func() ([]string, error)) {
	ctx, cancel := context.WithCancel(ctx)
	var (
		pushed []string
		err    error
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		pushed, err = person(ctx, dir, every)
	}()
	return func() ([]string, error) {
		cancel()
		<-done
		return pushed, err
	}
}

// person pushes a commit to main every interval from the clone in dir, as
// a teammate working in the repository during the burst would, pulling
// with rebase first and again when the push is refused, until ctx ends. It
// returns the commits it pushed.
func person(ctx context.Context, dir string, every time.Duration) ([]string, error) {
	var pushed []string
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return pushed, nil
		case <-time.After(every):
		}
		commit, err := personPush(ctx, dir, n)
		if ctx.Err() != nil {
			return pushed, nil
		}
		if err != nil {
			return pushed, err
		}
		pushed = append(pushed, commit)
	}
}

// personPush writes the n-th line of the changelog, commits it and pushes
// it, rebasing on what others pushed meanwhile, and returns the commit.
func personPush(ctx context.Context, dir string, n int) (string, error) {
	if _, err := runGit(ctx, dir, "pull", "--quiet", "--rebase", "origin", "main"); err != nil {
		return "", err
	}
	f, err := os.OpenFile(filepath.Join(dir, personFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, "- change %d\n", n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	for _, args := range [][]string{{"add", personFile}, {"commit", "--quiet", "-m", fmt.Sprintf("Note change %d", n)}} {
		if _, err := runGit(ctx, dir, args...); err != nil {
			return "", err
		}
	}
	for attempt := 1; ; attempt++ {
		_, err := runGit(ctx, dir, "push", "--quiet", "origin", "HEAD:main")
		if err == nil {
			break
		}
		if attempt == 10 {
			return "", fmt.Errorf("pushing change %d: %w", n, err)
		}
		if _, err := runGit(ctx, dir, "pull", "--quiet", "--rebase", "origin", "main"); err != nil {
			return "", err
		}
	}
	return runGit(ctx, dir, "rev-parse", "HEAD")
}

// lostCommits returns those of commits that main of the bare repository
// gitDir does not hold.
func lostCommits(ctx context.Context, gitDir string, commits []string) ([]string, error) {
	var lost []string
	for _, c := range commits {
		if _, err := runGit(ctx, "", "--git-dir", gitDir, "merge-base", "--is-ancestor", c, "main"); err != nil {
			if _, catErr := runGit(ctx, "", "--git-dir", gitDir, "cat-file", "-e", c+"^{commit}"); catErr != nil {
				return nil, fmt.Errorf("commit %s is not in the repository: %w", c, catErr)
			}
			lost = append(lost, c)
		}
	}
	return lost, nil
}
