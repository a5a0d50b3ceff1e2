// Package gitops is sluice's Git side: checking out a Kustomization's source,
// locating and editing the manifests that define an object, and committing
// and pushing the result. Controllers see the small interface in this file,
// never go-git's types.
package gitops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Source is a Git repository and branch, with the credentials to reach it.
type Source struct {
	// URL of the repository: http(s):// or ssh://.
	URL string
	// Branch that Flux follows.
	Branch string
	// Credentials, in the shape of Flux's GitRepository secrets.
	Credentials Credentials
	// Timeout bounds each clone, fetch and push, as the GitRepository's
	// spec.timeout bounds Flux's; the Repositories' own when zero.
	Timeout time.Duration
}

// Credentials are the fields of a Flux GitRepository secret.
type Credentials struct {
	Username, Password string
	BearerToken        string
	// Identity is a PEM private key and KnownHosts its known_hosts lines,
	// for SSH.
	Identity, KnownHosts []byte
	// CA is a PEM bundle for HTTPS servers.
	CA []byte
}

// Signature is a commit's author and committer.
type Signature struct {
	Name, Email string
}

// Change is one commit sluice wants on a branch, described by intent: Edit
// is applied to a fresh checkout of the branch's head, and applied again on
// the new head when another writer pushed first.
type Change struct {
	// Branch to push to.
	Branch string
	// From is the branch a new Branch starts from; Branch itself when
	// empty.
	From string
	// Message of the commit.
	Message string
	// Author of the commit, also its committer.
	Author Signature
	// Edit changes the files of the work tree whose root it is given. It
	// returns false when the tree already says what the change wants.
	Edit func(root string) (bool, error)
	// SigningKey, when set, is an armored OpenPGP private key that signs
	// the commit, decrypted with Passphrase when it is encrypted.
	SigningKey, Passphrase []byte

	// message, when set, gives the commit's message after Edit, in place
	// of Message.
	message func() string
}

// Result of a Write.
type Result struct {
	// Commit is the pushed commit, or the branch's head when nothing had to
	// change.
	Commit string
	// Pushed is false when the branch already said what the change wants.
	Pushed bool
	// Attempts is how many pushes it took: more than one when other
	// writers moved the branch meanwhile.
	Attempts int
	// Replayed is how many of those attempts put the first edit's changes
	// onto the moved branch as they were, without editing again: the
	// commits that moved it changed nothing the edit read or wrote.
	Replayed int
}

// Writer commits and pushes changes.
type Writer interface {
	Write(ctx context.Context, src Source, change Change) (Result, error)
	WriteAll(ctx context.Context, src Source, changes []Change) ([]Result, []error)
}

// Sentinel errors a caller can tell apart with errors.Is.
var (
	// ErrConflict: other writers kept moving the branch, or the edit no
	// longer applies to its head.
	ErrConflict = errors.New("the branch kept changing under sluice's writes")
	// ErrPushRefused: the server refused the push, for example because the
	// credentials may only read.
	ErrPushRefused = errors.New("the Git server refused the push")
	// ErrUnreachable: the repository could not be fetched.
	ErrUnreachable = errors.New("the Git repository could not be fetched")
	// ErrInsecureCredentials: the credentials would be sent in clear text
	// over plain HTTP, which sluice refuses unless it is told otherwise.
	ErrInsecureCredentials = errors.New("refusing to send Git credentials over plain HTTP")
)

// Option configures a Repositories.
type Option func(*Repositories)

// WithTimeout bounds every network call; one minute by default.
func WithTimeout(d time.Duration) Option { return func(r *Repositories) { r.timeout = d } }

// WithRetries sets how many times a push rejected as non-fast-forward is
// retried on the new head, and the first backoff; 5 and 200ms by default.
func WithRetries(n int, backoff time.Duration) Option {
	return func(r *Repositories) { r.retries, r.backoff = n, backoff }
}

// WithCredentialsOverHTTP lets basic auth and bearer tokens go to plain
// http:// URLs, which are refused by default (as fluxcd/pkg/git's client
// refuses them unless WithInsecureCredentialsOverHTTP is given).
func WithCredentialsOverHTTP() Option {
	return func(r *Repositories) { r.credentialsOverHTTP = true }
}

// Repositories keeps one working copy per repository URL under a folder,
// updated by fetch rather than cloned again for each write, and serializes
// the writes to each.
type Repositories struct {
	dir     string
	timeout time.Duration
	retries int
	backoff time.Duration
	// credentialsOverHTTP lets credentials go over plain HTTP.
	credentialsOverHTTP bool

	mu      sync.Mutex
	locks   map[string]chan struct{}
	pending map[string][]*waitingWrite
}

var _ Writer = (*Repositories)(nil)

// PrivateDir makes dir a folder only sluice's user may enter, for its
// working copies: a folder that is a link, or that another user owns, is
// refused, as another user could read the clones or plant links in them.
func PrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("the Git working copies' folder %s is not a folder (a symbolic link?)", dir)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("the Git working copies' folder %s belongs to another user", dir)
	}
	return os.Chmod(dir, 0o700)
}

// NewRepositories keeps working copies under dir.
func NewRepositories(dir string, opts ...Option) *Repositories {
	r := &Repositories{dir: dir, timeout: time.Minute, retries: 5, backoff: 200 * time.Millisecond, locks: map[string]chan struct{}{}, pending: map[string][]*waitingWrite{}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// timeoutFor is the bound of one network call to src.
func (r *Repositories) timeoutFor(src Source) time.Duration {
	if src.Timeout > 0 {
		return src.Timeout
	}
	return r.timeout
}

// lock takes the repository's lock, or gives up when ctx ends: one host
// that never answers holds its own writes, not the caller's deadline.
func (r *Repositories) lock(ctx context.Context, url string) (func(), error) {
	r.mu.Lock()
	l, ok := r.locks[url]
	if !ok {
		l = make(chan struct{}, 1)
		r.locks[url] = l
	}
	r.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the writes to %s before this one: %w", url, ctx.Err())
	}
}

// withoutUserinfo moves credentials written in the URL
// (https://user:token@host/...) into the source's credentials, unless it
// has its own, and takes them out of the URL: no message, no working
// copy's configuration and no log line then holds them.
func (s Source) withoutUserinfo() Source {
	u, err := url.Parse(s.URL)
	if err != nil || u.User == nil {
		return s
	}
	c := s.Credentials
	if len(c.Identity) == 0 && c.Username == "" && c.Password == "" && c.BearerToken == "" {
		if u.Scheme == "ssh" {
			// The SSH user is not a secret: keep it for the login.
			return s
		}
		s.Credentials.Username = u.User.Username()
		s.Credentials.Password, _ = u.User.Password()
	}
	if u.Scheme == "ssh" {
		u.User = url.User(u.User.Username())
	} else {
		u.User = nil
	}
	s.URL = u.String()
	return s
}

// ValidBranch fails when name cannot be a Git branch name.
func ValidBranch(name string) error {
	if name == "" {
		return errors.New("an empty branch name")
	}
	return plumbing.NewBranchReferenceName(name).Validate()
}

// Write applies change to the head of its branch and pushes one commit,
// unless the branch already says what the change wants. A push rejected
// because the branch moved is retried on the new head with backoff. Writes
// to the same branch that wait while another is under way are coalesced
// into one commit and one push.
func (r *Repositories) Write(ctx context.Context, src Source, change Change) (Result, error) {
	results, errs := r.WriteAll(ctx, src, []Change{change})
	return results[0], errs[0]
}

// WriteAll writes each change as Write does, queued together: the changes
// to one branch with the same credentials share a commit and a push. The
// i-th result and error are changes[i]'s.
func (r *Repositories) WriteAll(ctx context.Context, src Source, changes []Change) ([]Result, []error) {
	src = src.withoutUserinfo()
	writes := make([]*waitingWrite, len(changes))
	var keys []string
	r.mu.Lock()
	for i, change := range changes {
		if change.From == "" {
			change.From = change.Branch
		}
		writes[i] = &waitingWrite{change: change, done: make(chan writeOutcome, 1)}
		key := batchKey(src, change)
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
		r.pending[key] = append(r.pending[key], writes[i])
	}
	r.mu.Unlock()

	results, errs := make([]Result, len(changes)), make([]error, len(changes))
	unlock, err := r.lock(ctx, src.URL)
	if err != nil {
		for i, w := range writes {
			key := batchKey(src, w.change)
			r.mu.Lock()
			taken := !slices.Contains(r.pending[key], w)
			if !taken {
				r.pending[key] = slices.DeleteFunc(r.pending[key], func(p *waitingWrite) bool { return p == w })
			}
			r.mu.Unlock()
			if !taken {
				errs[i] = err
				continue
			}
			// A writer that holds the repository took this write into
			// its batch: its outcome is this write's.
			out := <-w.done
			results[i], errs[i] = out.res, out.err
		}
		return results, errs
	}
	defer unlock()

	for _, key := range keys {
		r.mu.Lock()
		batch := r.pending[key]
		delete(r.pending, key)
		r.mu.Unlock()
		if len(batch) > 0 {
			r.writeBatch(ctx, src, batch)
		}
	}
	// Each write's batch, or an earlier writer's that took it.
	for i, w := range writes {
		out := <-w.done
		results[i], errs[i] = out.res, out.err
	}
	return results, errs
}

// writeBatch writes a batch of waiting writes as one commit, and tells each
// its outcome, whatever happens: a panic fails the writes it reached, never
// leaves one waiting.
func (r *Repositories) writeBatch(ctx context.Context, src Source, batch []*waitingWrite) {
	outcomes := make([]*writeOutcome, len(batch))
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("writing to %s failed unexpectedly: %v", src.URL, p)
			for i := range outcomes {
				if outcomes[i] == nil {
					outcomes[i] = &writeOutcome{err: err}
				}
			}
		}
		for i, b := range batch {
			b.done <- *outcomes[i]
		}
	}()
	start := time.Now()
	defer func() { logWrite(ctx, src, batch, outcomes, time.Since(start)) }()
	r.writeTogether(ctx, src, batch, outcomes)
}

// writeTogether writes a batch of writes as one commit and sets their
// outcomes. When one's edit fails, the others make the batch again, and it
// is written on its own, to land or report its error.
func (r *Repositories) writeTogether(ctx context.Context, src Source, batch []*waitingWrite, outcomes []*writeOutcome) {
	change, recorded := coalesce(batch)
	res, err := r.write(ctx, src, change)
	var (
		editErr *editError
		failed  *failedEdit
	)
	switch {
	case len(batch) > 1 && errors.As(err, &failed):
		var (
			rest   []*waitingWrite
			places []int
		)
		for i, b := range batch {
			if i != failed.index {
				rest, places = append(rest, b), append(places, i)
			}
		}
		restOutcomes := make([]*writeOutcome, len(rest))
		r.writeTogether(ctx, src, rest, restOutcomes)
		for j, i := range places {
			outcomes[i] = restOutcomes[j]
		}
		res, err := r.write(ctx, src, batch[failed.index].change)
		outcomes[failed.index] = &writeOutcome{res, err}
		return
	case len(batch) > 1 && errors.As(err, &editErr):
		// An edit failed without saying which (a panic): each write goes
		// on its own, so that the others land and only the failing one
		// reports its error.
		for i, b := range batch {
			res, err := r.write(ctx, src, b.change)
			outcomes[i] = &writeOutcome{res, err}
		}
		return
	}
	for i := range batch {
		res := res
		// A write whose branch already said what it wants pushed nothing,
		// whatever the others of its batch pushed.
		res.Pushed = res.Pushed && recorded[i]
		outcomes[i] = &writeOutcome{res, err}
	}
}

// safeEdit runs an edit; a panic (a YAML library's Must call on input it
// did not expect) fails the edit instead of the process.
func safeEdit(edit func(root string) (bool, error), root string) (changed bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			changed, err = false, fmt.Errorf("%w: the edit failed unexpectedly: %v", ErrCannotEdit, p)
		}
	}()
	return edit(root)
}

// editError is a change's Edit failing, as opposed to Git failing.
type editError struct{ err error }

func (e *editError) Error() string { return e.err.Error() }
func (e *editError) Unwrap() error { return e.err }

// waitingWrite is a Write waiting for its repository.
type waitingWrite struct {
	change Change
	done   chan writeOutcome
}

type writeOutcome struct {
	res Result
	err error
}

// batchKey groups the writes that may share a commit: same repository,
// branches and credentials.
func batchKey(src Source, c Change) string {
	sum := sha256.Sum256(append(append([]byte(src.Credentials.Username+"\x00"+src.Credentials.Password+"\x00"+src.Credentials.BearerToken+"\x00"), src.Credentials.Identity...), c.SigningKey...))
	return src.URL + "\x00" + c.Branch + "\x00" + c.From + "\x00" + hex.EncodeToString(sum[:8])
}

// coalesce makes one change of several: every edit on the same tree, and
// in the commit the message of each edit that changed it. recorded[i]
// tells, after the last edit, whether batch[i]'s changed the tree.
func coalesce(batch []*waitingWrite) (_ Change, recorded []bool) {
	recorded = make([]bool, len(batch))
	if len(batch) == 1 {
		recorded[0] = true
		return batch[0].change, recorded
	}
	first := batch[0].change
	first.Edit = func(root string) (bool, error) {
		changed, err := inBatch(root, len(batch), func(i int) (bool, error) { return batch[i].change.Edit(root) })
		if err != nil {
			return false, err
		}
		copy(recorded, changed)
		return slices.Contains(recorded, true), nil
	}
	// NOTE: a write whose edit changes nothing (its change is in Git
	// already, pushed before a crash or by an earlier batch) must not be
	// recorded again: its message and trailers stay out of the commit.
	first.message = func() string {
		var messages []string
		for i, b := range batch {
			if recorded[i] {
				messages = append(messages, b.change.Message)
			}
		}
		if len(messages) == 1 {
			return messages[0]
		}
		for i := range messages {
			messages[i] = strings.TrimSpace(messages[i])
		}
		return fmt.Sprintf("Record %d changes\n\n%s\n", len(messages), strings.Join(messages, "\n\n---\n\n"))
	}
	return first, recorded
}

// write pushes one change, fetching and editing again on the new head when
// the push is refused because the branch moved.
func (r *Repositories) write(ctx context.Context, src Source, change Change) (Result, error) {
	auth, err := r.authMethod(src)
	if err != nil {
		return Result{}, err
	}
	repo, err := r.open(ctx, src, auth)
	if err != nil {
		return Result{}, err
	}
	backoff, recloned := r.backoff, false
	// last is the attempt whose push the moved branch refused, and
	// replayed counts the attempts that put its changes onto the new head.
	var last *refused
	replayed := 0
	for attempt := 0; ; {
		err := r.fetch(ctx, repo, src, auth)
		var (
			res Result
			ref *refused
		)
		if err == nil {
			res, ref, err = r.commitAndPush(ctx, repo, src, auth, change, last)
			replayed += res.Replayed
		}
		var editErr *editError
		switch {
		case err == nil || errors.As(err, &editErr):
			res.Attempts, res.Replayed = attempt+1, replayed
			return res, err
		case !recloned && (broken(repo) || errors.As(err, new(*workingCopyError))):
			// The working copy is only a cache: a broken one (objects
			// lost to a crash or a full disk) is cloned again, once.
			recloned, last = true, nil
			if repo, err = r.reclone(ctx, src, auth); err != nil {
				return Result{}, err
			}
			continue
		case !isNonFastForward(err):
			return res, err
		case attempt >= r.retries:
			return Result{}, fmt.Errorf("%w: pushing to %s failed %d times: %v", ErrConflict, change.Branch, attempt+1, err)
		}
		last = ref
		attempt++
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(jittered(backoff)):
		}
		backoff *= 2
	}
}

// jittered is d give or take half: writers that lost the same race (two
// shards, or two replicas during a hand-over) do not retry in step.
func jittered(d time.Duration) time.Duration {
	return d/2 + rand.N(d+1)
}

// commitAndPush edits the head of the change's branch (of From when the
// branch is new), commits and pushes. After last, an attempt whose push
// the moved branch refused, it puts last's changes onto the new head
// instead of editing again when the commits that moved the branch changed
// nothing the edit read or wrote (see refused.replayable). A push the
// moved branch refuses returns what the next attempt needs to do so.
func (r *Repositories) commitAndPush(ctx context.Context, repo *git.Repository, src Source,
	auth transport.AuthMethod, change Change, last *refused) (Result, *refused, error) {

	from := change.From
	base, err := repo.Reference(plumbing.NewRemoteReferenceName("origin", change.Branch), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) && from != change.Branch {
		base, err = repo.Reference(plumbing.NewRemoteReferenceName("origin", from), true)
	}
	if err != nil {
		return Result{}, nil, fmt.Errorf("branch %s not found in %s: %w", from, src.URL, err)
	}

	wt, err := repo.Worktree()
	if err != nil {
		return Result{}, nil, &workingCopyError{err}
	}
	// opts are the commit's, dated when it is made.
	opts := func() (*git.CommitOptions, error) {
		signKey, err := signingEntity(change.SigningKey, change.Passphrase)
		if err != nil {
			return nil, err
		}
		sig := &object.Signature{Name: change.Author.Name, Email: change.Author.Email, When: time.Now()}
		return &git.CommitOptions{Author: sig, Committer: sig, SignKey: signKey}, nil
	}

	ours, replayable, err := last.replayable(repo, base.Hash())
	if err != nil {
		return Result{}, nil, &workingCopyError{err}
	}
	if replayable {
		opts, err := opts()
		if err != nil {
			return Result{}, nil, err
		}
		// A replay that fails leaves the working copy touched: the edit
		// is made again below, on a fresh checkout.
		if commit, err := replay(repo, wt, base.Hash(), ours, last.message, opts); err == nil {
			commitsMade.WithLabelValues("replayed").Inc()
			checkedOut(wt.Filesystem.Root(), commit.String())
			res, err := r.push(ctx, repo, src, auth, change.Branch, commit)
			res.Replayed = 1
			if isNonFastForward(err) {
				return res, &refused{base: base.Hash(), commit: commit, message: last.message, reads: last.reads}, err
			}
			return res, nil, err
		}
	}
	// Start from exactly the remote head: whatever a crashed earlier
	// attempt left behind is thrown away, and its intent recomputed. A
	// working copy that holds the head already, untouched since its
	// checkout (the last edits wrote nothing), is not checked out again.
	root := wt.Filesystem.Root()
	if !isCheckoutOf(root, base.Hash().String()) {
		if err := wt.Checkout(&git.CheckoutOptions{Hash: base.Hash(), Force: true}); err != nil {
			return Result{}, nil, &workingCopyError{fmt.Errorf("checking out %s: %w", base.Hash(), err)}
		}
		if err := wt.Clean(&git.CleanOptions{Dir: true}); err != nil {
			return Result{}, nil, &workingCopyError{err}
		}
		checkedOut(root, base.Hash().String())
	}

	stopRecording := recordReads(root)
	changed, err := safeEdit(change.Edit, root)
	reads := stopRecording()
	if err != nil || changed {
		// What an edit wrote is no checkout of base, whether it wrote
		// through sluice's own writes or not.
		touched(root)
	}
	if err != nil {
		return Result{}, nil, &editError{err}
	}
	if !changed {
		return Result{Commit: base.Hash().String()}, nil, nil
	}
	// NOTE: the working copy's objects are read here first when its
	// checkout was skipped: failing to read them is a broken working copy.
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		return Result{}, nil, &workingCopyError{err}
	}
	message := change.Message
	if change.message != nil {
		message = change.message()
	}
	commitOpts, err := opts()
	if err != nil {
		return Result{}, nil, err
	}
	commit, err := wt.Commit(message, commitOpts)
	switch {
	case errors.Is(err, git.ErrEmptyCommit):
		// The edits wrote what the tree already held.
		return Result{Commit: base.Hash().String()}, nil, nil
	case err != nil:
		return Result{}, nil, &workingCopyError{fmt.Errorf("committing: %w", err)}
	}
	commitsMade.WithLabelValues("edited").Inc()
	// NOTE: with every change added, the working copy holds the commit
	// just made, as a checkout of it would: the next write on top of it
	// (the branch did not move) checks nothing out again, which on a large
	// repository costs a walk of every file, twice.
	checkedOut(root, commit.String())

	res, err := r.push(ctx, repo, src, auth, change.Branch, commit)
	if isNonFastForward(err) {
		return res, &refused{base: base.Hash(), commit: commit, message: message, reads: reads}, err
	}
	return res, nil, err
}

// push pushes commit to branch.
func (r *Repositories) push(ctx context.Context, repo *git.Repository, src Source, auth transport.AuthMethod, branch string, commit plumbing.Hash) (Result, error) {
	pushCtx, cancel := context.WithTimeout(ctx, r.timeoutFor(src))
	defer cancel()
	err := repo.PushContext(pushCtx, &git.PushOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{config.RefSpec(commit.String() + ":refs/heads/" + branch)},
		Auth:       auth,
		CABundle:   src.Credentials.CA,
	})
	countRemote("push", err)
	switch {
	case err == nil:
		return Result{Commit: commit.String(), Pushed: true}, nil
	case isNonFastForward(err):
		return Result{}, err
	case errors.Is(err, transport.ErrAuthorizationFailed), errors.Is(err, transport.ErrAuthenticationRequired),
		strings.Contains(err.Error(), "403"):
		return Result{}, fmt.Errorf("%w: %s: %v", ErrPushRefused, src.URL, err)
	default:
		return Result{}, fmt.Errorf("pushing to %s: %w", src.URL, err)
	}
}

// open returns the working copy of src, cloning it the first time.
func (r *Repositories) open(ctx context.Context, src Source, auth transport.AuthMethod) (*git.Repository, error) {
	dir := r.workingCopy(src)
	repo, err := git.PlainOpen(dir)
	if err == nil {
		if _, err := os.Stat(filepath.Join(dir, ".git", cloneComplete)); err == nil {
			return repo, nil
		}
	}
	// A clone a crash left half-written, or a broken one, is only a
	// cache: start again.
	return r.reclone(ctx, src, auth)
}

// cloneComplete marks, in a working copy's .git folder, a clone that
// finished.
const cloneComplete = "sluice-clone-complete"

// workingCopy is the folder of src's working copy.
func (r *Repositories) workingCopy(src Source) string {
	sum := sha256.Sum256([]byte(src.URL))
	return filepath.Join(r.dir, hex.EncodeToString(sum[:8]))
}

// reclone clones src afresh into its working copy's folder.
func (r *Repositories) reclone(ctx context.Context, src Source, auth transport.AuthMethod) (*git.Repository, error) {
	dir := r.workingCopy(src)
	touched(dir)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	cloneCtx, cancel := context.WithTimeout(ctx, r.timeoutFor(src))
	defer cancel()
	repo, err := git.PlainCloneContext(cloneCtx, dir, false, &git.CloneOptions{
		URL:           src.URL,
		Auth:          auth,
		ReferenceName: plumbing.NewBranchReferenceName(src.Branch),
		CABundle:      src.Credentials.CA,
		// The heads are enough to edit and commit on, and a push from
		// a shallow copy walks only them, not the whole history.
		Depth: 1,
	})
	countRemote("clone", err)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: cloning %s: %v", ErrUnreachable, src.URL, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".git", cloneComplete), nil, 0o600); err != nil {
		return nil, err
	}
	return repo, nil
}

// workingCopyError is a failure to read the working copy itself, such as
// objects a crash left truncated; the write clones again.
type workingCopyError struct{ error }

func (e *workingCopyError) Unwrap() error { return e.error }

// broken tells whether a working copy lost what a clone gave it: its head,
// the head's commit, or a readable reference (a crash can leave a ref file
// empty).
func broken(repo *git.Repository) bool {
	head, err := repo.Head()
	if err != nil {
		return true
	}
	if _, err := repo.CommitObject(head.Hash()); err != nil {
		return true
	}
	refs, err := repo.References()
	if err != nil {
		return true
	}
	return refs.ForEach(func(*plumbing.Reference) error { return nil }) != nil
}

func (r *Repositories) fetch(ctx context.Context, repo *git.Repository, src Source, auth transport.AuthMethod) error {
	fetchCtx, cancel := context.WithTimeout(ctx, r.timeoutFor(src))
	defer cancel()
	err := repo.FetchContext(fetchCtx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*"},
		Auth:       auth,
		Force:      true,
		Prune:      true,
		CABundle:   src.Credentials.CA,
		Depth:      1,
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		err = nil
	}
	countRemote("fetch", err)
	if err != nil {
		return fmt.Errorf("%w: fetching %s: %v", ErrUnreachable, src.URL, err)
	}
	return nil
}

// isNonFastForward tells whether a push failed because the branch moved
// since the last fetch.
//
// NOTE: go-git checks that a push is a fast-forward by walking from the new
// commit down to the branch's head. A shallow working copy (sluice clones
// and fetches at depth 1) misses the commits below its boundary, and a
// moved head is not among those it holds: the walk fails with
// plumbing.ErrObjectNotFound rather than "non-fast-forward". A working copy
// that lost its head or references is found broken, and cloned again,
// before this is asked; one missing other objects is fetched into again,
// as many times as a moved branch would be.
func isNonFastForward(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return errors.Is(err, git.ErrForceNeeded) || errors.Is(err, plumbing.ErrObjectNotFound) ||
		strings.Contains(msg, "non-fast-forward") || strings.Contains(msg, "fetch first") ||
		strings.Contains(msg, "failed to update ref")
}

// PruneBranches deletes the branches of src that sluice pushed and that
// owned says belong to the caller, from the message of their head commit,
// except keep and the branches in protect; it returns the ones it deleted.
// A branch whose head is anyone else's commit, or that src follows, is
// never deleted.
func (r *Repositories) PruneBranches(ctx context.Context, src Source, owned func(message string) bool, keep string, protect ...string) ([]string, error) {
	src = src.withoutUserinfo()
	unlock, err := r.lock(ctx, src.URL)
	if err != nil {
		return nil, err
	}
	defer unlock()
	auth, err := r.authMethod(src)
	if err != nil {
		return nil, err
	}
	repo, err := r.open(ctx, src, auth)
	if err != nil {
		return nil, err
	}
	if err := r.fetch(ctx, repo, src, auth); err != nil {
		return nil, err
	}
	refs, err := repo.References()
	if err != nil {
		return nil, err
	}
	kept := map[string]bool{keep: true, src.Branch: true}
	for _, p := range protect {
		kept[p] = true
	}
	var stale []string
	var specs []config.RefSpec
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name()
		if !name.IsRemote() || ref.Type() != plumbing.HashReference {
			return nil
		}
		branch := strings.TrimPrefix(name.String(), "refs/remotes/origin/")
		if kept[branch] {
			return nil
		}
		head, err := repo.CommitObject(ref.Hash())
		if err != nil || !owned(head.Message) {
			return nil
		}
		stale = append(stale, branch)
		specs = append(specs, config.RefSpec(":refs/heads/"+branch))
		return nil
	})
	if err != nil || len(specs) == 0 {
		return nil, err
	}
	pushCtx, cancel := context.WithTimeout(ctx, r.timeoutFor(src))
	defer cancel()
	err = repo.PushContext(pushCtx, &git.PushOptions{RemoteName: "origin", RefSpecs: specs, Auth: auth, CABundle: src.Credentials.CA})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		err = nil
	}
	countRemote("push", err)
	if err != nil {
		return nil, fmt.Errorf("deleting branches %v: %w", stale, err)
	}
	return stale, nil
}
