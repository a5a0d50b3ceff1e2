package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/spf13/pflag"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/gitops"
)

// gitFlags say where and as whom sluice commits.
type gitFlags struct {
	repo                    string
	url                     string
	username, password      string
	authorName, authorEmail string
	timeout                 time.Duration
}

func (f *gitFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.repo, "repo", "", "your clone of the Delivery's repository: sluice pushes to its origin with the credentials of its URL, as its user.name and user.email, and fetches it afterwards")
	fs.StringVar(&f.url, "git-url", "", "the repository to push to (default: the URL of the GitRepository that applies the Delivery)")
	fs.StringVar(&f.username, "git-username", os.Getenv("SLUICE_GIT_USERNAME"), "user name for HTTPS Git (env SLUICE_GIT_USERNAME)")
	fs.StringVar(&f.password, "git-password", "", "password or token for HTTPS Git (env SLUICE_GIT_TOKEN)")
	fs.StringVar(&f.authorName, "author-name", "", "the commits' author (default: user.name of your Git configuration)")
	fs.StringVar(&f.authorEmail, "author-email", "", "the commits' author e-mail (default: user.email of your Git configuration)")
	fs.DurationVar(&f.timeout, "git-timeout", 2*time.Minute, "how long a fetch or push may take")
}

// workspace is a fresh checkout of the branch Flux follows, where one
// change is made and pushed.
type workspace struct {
	dir    string
	repo   *git.Repository
	url    string
	auth   transport.AuthMethod
	branch string
	head   *object.Commit
	author object.Signature
	// parents, when set, are the parents of the commit: a merge.
	parents []plumbing.Hash
}

// target is where and as whom a command writes.
type target struct {
	url    string
	auth   transport.AuthMethod
	branch string
	author object.Signature
	// clone is the user's clone, fetched after a push.
	clone *git.Repository
}

func (o *options) target(s *source) (*target, error) {
	branch, err := s.branch()
	if err != nil {
		return nil, err
	}
	t := &target{branch: branch, url: o.git.url}
	var cfg *config.Config
	if o.git.repo != "" {
		clone, err := git.PlainOpenWithOptions(o.git.repo, &git.PlainOpenOptions{DetectDotGit: true})
		if err != nil {
			return nil, fmt.Errorf("opening your clone %s: %w", o.git.repo, err)
		}
		t.clone = clone
		if t.url == "" {
			remote, err := clone.Remote("origin")
			if err != nil {
				return nil, fmt.Errorf("your clone %s: %w", o.git.repo, err)
			}
			t.url = remote.Config().URLs[0]
		}
		if cfg, err = clone.ConfigScoped(config.SystemScope); err != nil {
			return nil, err
		}
	} else if cfg, err = config.LoadConfig(config.GlobalScope); err != nil {
		cfg = config.NewConfig()
	}
	if t.url == "" {
		t.url = s.repo.Spec.URL
	}
	t.author = object.Signature{Name: cfg.User.Name, Email: cfg.User.Email}
	if cfg.Author.Name != "" {
		t.author.Name = cfg.Author.Name
	}
	if cfg.Author.Email != "" {
		t.author.Email = cfg.Author.Email
	}
	if o.git.authorName != "" {
		t.author.Name = o.git.authorName
	}
	if o.git.authorEmail != "" {
		t.author.Email = o.git.authorEmail
	}
	if t.author.Name == "" || t.author.Email == "" {
		return nil, errors.New("who are you? set user.name and user.email in your Git configuration, or pass --author-name and --author-email: sluice commits as you")
	}

	// Credentials: the flags, else those written in the URL.
	password := o.git.password
	if password == "" {
		password = os.Getenv("SLUICE_GIT_TOKEN")
	}
	if u, err := url.Parse(t.url); err == nil && u.User != nil && (u.Scheme == "http" || u.Scheme == "https") {
		if p, ok := u.User.Password(); ok && password == "" {
			t.auth = &githttp.BasicAuth{Username: u.User.Username(), Password: p}
		}
		u.User = nil
		t.url = u.String()
	}
	if password != "" {
		user := o.git.username
		if user == "" {
			user = "git"
		}
		t.auth = &githttp.BasicAuth{Username: user, Password: password}
	}
	return t, nil
}

// redacted is the target's URL, which holds no credentials.
func (t *target) String() string { return t.url }

// checkout clones the target's branch into a temporary folder.
func (o *options) checkout(ctx context.Context, t *target) (*workspace, error) {
	dir, err := os.MkdirTemp("", "sluice-cli-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.git.timeout)
	defer cancel()
	repo, err := git.PlainCloneContext(ctx, dir, false, &git.CloneOptions{
		URL: t.url, Auth: t.auth, ReferenceName: plumbing.NewBranchReferenceName(t.branch), SingleBranch: true,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cloning branch %s of %s: %w", t.branch, t.url, err)
	}
	ref, err := repo.Head()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	head, err := repo.CommitObject(ref.Hash())
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &workspace{dir: dir, repo: repo, url: t.url, auth: t.auth, branch: t.branch, head: head, author: t.author}, nil
}

func (w *workspace) close() { os.RemoveAll(w.dir) }

// fetchBranch fetches another branch of the repository and returns its head.
func (w *workspace) fetchBranch(ctx context.Context, branch string) (*object.Commit, error) {
	remoteRef := plumbing.NewRemoteReferenceName("origin", branch)
	err := w.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin", Auth: w.auth,
		RefSpecs: []config.RefSpec{config.RefSpec(fmt.Sprintf("+refs/heads/%s:%s", branch, remoteRef))},
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("fetching branch %s: %w", branch, err)
	}
	ref, err := w.repo.Reference(remoteRef, true)
	if err != nil {
		return nil, fmt.Errorf("branch %s: %w", branch, err)
	}
	return w.repo.CommitObject(ref.Hash())
}

// errPushRefused: the remote refused the push for another reason than a
// concurrent push: a protected branch, or credentials that may not push.
var errPushRefused = errors.New("push refused")

// commitAndPush commits the checkout's changes as the user and pushes the
// branch. It returns the commit.
func (w *workspace) commitAndPush(ctx context.Context, message string) (string, error) {
	wt, err := w.repo.Worktree()
	if err != nil {
		return "", err
	}
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		return "", err
	}
	sig := w.author
	sig.When = time.Now()
	hash, err := wt.Commit(message, &git.CommitOptions{
		Author: &sig, Committer: &sig, Parents: w.parents, AllowEmptyCommits: len(w.parents) > 1,
	})
	if err != nil {
		return "", err
	}
	ref := plumbing.NewBranchReferenceName(w.branch)
	err = w.repo.PushContext(ctx, &git.PushOptions{
		RemoteName: "origin", Auth: w.auth,
		RefSpecs: []config.RefSpec{config.RefSpec(fmt.Sprintf("%s:%s", hash, ref))},
	})
	switch {
	case err == nil:
		return hash.String(), nil
	case errors.Is(err, git.ErrNonFastForwardUpdate) || strings.Contains(err.Error(), "non-fast-forward"):
		return "", errNonFastForward
	default:
		return "", fmt.Errorf("%w: %s", errPushRefused, strings.TrimSpace(err.Error()))
	}
}

var errNonFastForward = errors.New("the branch moved")

// change is one commit the user asks for.
type change struct {
	// edit changes the fresh checkout and returns the commit's message,
	// trailers included, or "" when Git says it already.
	edit func(ctx context.Context, w *workspace) (string, error)
}

// commit makes the change on a fresh checkout of the branch Flux follows
// and pushes it, starting again when someone pushed meanwhile. It returns
// the commit, or "" when Git says it already.
func (o *options) commit(ctx context.Context, t *target, ch change) (string, error) {
	for attempt := 0; ; attempt++ {
		w, err := o.checkout(ctx, t)
		if err != nil {
			return "", err
		}
		commit, err := func() (string, error) {
			defer w.close()
			message, err := ch.edit(ctx, w)
			if err != nil || message == "" {
				return "", err
			}
			pctx, cancel := context.WithTimeout(ctx, o.git.timeout)
			defer cancel()
			return w.commitAndPush(pctx, message)
		}()
		if errors.Is(err, errNonFastForward) && attempt < 4 {
			continue
		}
		if err == nil && commit != "" && t.clone != nil {
			// The user's clone learns of the commit; their branches and
			// work tree are theirs.
			fctx, cancel := context.WithTimeout(ctx, o.git.timeout)
			_ = t.clone.FetchContext(fctx, &git.FetchOptions{RemoteName: "origin", Auth: t.auth})
			cancel()
		}
		return commit, err
	}
}

// kustomization is how Flux builds the source's path, for gitops' edits.
func (c *cluster) kustomization(ctx context.Context, s *source) (gitops.Kustomization, error) {
	k := gitops.Kustomization{Path: s.ks.Spec.Path, Flux: s.ks}
	if s.repo.Spec.Ignore != nil {
		k.Ignore = *s.repo.Spec.Ignore
	}
	if pb := s.ks.Spec.PostBuild; pb != nil {
		vars, err := c.postBuildVariables(ctx, s)
		if err != nil {
			return k, err
		}
		k.Vars = vars
	}
	return k, nil
}

// ids are the Delivery and its Deployment as the Kustomization builds them.
func ids(d *deliveryv1.Delivery) (delivery, deployment gitops.ObjectID) {
	return gitops.ObjectID{Kind: deliveryv1.DeliveryKind, Namespace: d.Namespace, Name: d.Name},
		gitops.ObjectID{Kind: "Deployment", Namespace: d.Namespace, Name: d.Spec.DeploymentRef.Name}
}

// trailers end the message of every commit the command makes, as they end
// sluice's own.
func trailers(d *deliveryv1.Delivery, action, hash string, step *int32) string {
	t := fmt.Sprintf("\n\n%s: %s/%s\n%s: %s\n", controllers.TrailerDelivery, d.Namespace, d.Name, controllers.TrailerAction, action)
	if hash != "" {
		t += fmt.Sprintf("%s: %s\n", controllers.TrailerTemplateHash, hash)
	}
	if step != nil {
		t += fmt.Sprintf("%s: %d\n", controllers.TrailerStep, *step)
	}
	return t
}
