package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sluice-dev/sluice/internal/kubetest"
)

// gitRepo is a user's working copy of a repository on the stack's Git
// server.
type gitRepo struct {
	t   *testing.T
	dir string
	// url is the repository's URL, without credentials.
	url string
}

// newGitRepo creates repository name on the Git server and clones it.
func newGitRepo(t *testing.T, name string) *gitRepo {
	t.Helper()
	repoURL, err := env.Git.CreateRepository(name)
	if err != nil {
		t.Fatalf("creating repository: %v", err)
	}
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(env.Git.Username, env.Git.Password)
	r := &gitRepo{t: t, dir: filepath.Join(t.TempDir(), name), url: repoURL}
	r.git("", "clone", "--quiet", u.String(), r.dir)
	return r
}

// newGitRepoClone clones an existing repository of the Git server.
func newGitRepoClone(t *testing.T, name string) *gitRepo {
	t.Helper()
	u, err := url.Parse(env.Git.RepositoryURL(name))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(env.Git.Username, env.Git.Password)
	r := &gitRepo{t: t, dir: filepath.Join(t.TempDir(), name), url: env.Git.RepositoryURL(name)}
	r.git("", "clone", "--quiet", u.String(), r.dir)
	return r
}

// try runs git in the working copy and returns its output and error,
// without failing the test: for use outside the test's goroutine.
func (r *gitRepo) try(args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=Another Writer", "-c", "user.email=other@example.com"}, args...)...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err == nil && args[0] == "push" {
		err = announcePush(r.url)
	}
	return strings.TrimSpace(string(out)), err
}

// git runs git in the working copy (or in dir when given) and returns its
// output.
func (r *gitRepo) git(dir string, args ...string) string {
	r.t.Helper()
	if dir == "" {
		dir = r.dir
	}
	cmd := exec.Command("git", append([]string{"-c", "user.name=A User", "-c", "user.email=user@example.com"}, args...)...)
	if args[0] != "clone" {
		cmd.Dir = dir
	}
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[0] == "push" && dir == r.dir {
		if err := announcePush(r.url); err != nil {
			r.t.Fatal(err)
		}
	}
	return strings.TrimSpace(string(out))
}

// receivers are the clusters whose Flux hears of the pushes people make to
// the Git server: the suite's, and any a test adds while it runs.
var receivers = struct {
	sync.Mutex
	clients []client.Client
}{}

// addReceiver makes c's Flux hear of people's pushes until the test ends.
func addReceiver(t *testing.T, c client.Client) {
	receivers.Lock()
	receivers.clients = append(receivers.clients, c)
	receivers.Unlock()
	t.Cleanup(func() {
		receivers.Lock()
		defer receivers.Unlock()
		receivers.clients = slices.DeleteFunc(receivers.clients, func(o client.Client) bool { return o == c })
	})
}

// announcePush asks every GitRepository that follows the repository at url
// to fetch now, as a Flux Receiver on the repository's push webhook does.
// The suite's GitRepositories fetch every ten minutes otherwise: what the
// scenarios see in time is sluice asking Flux after its own pushes, and
// people's pushes announced like this, never Flux's polling.
func announcePush(url string) error {
	receivers.Lock()
	clients := append([]client.Client{k8sClient}, receivers.clients...)
	receivers.Unlock()
	ctx := context.Background()
	for _, c := range clients {
		var repos sourcev1.GitRepositoryList
		if err := c.List(ctx, &repos); err != nil {
			return fmt.Errorf("announcing a push to %s: %w", url, err)
		}
		for i := range repos.Items {
			repo := &repos.Items[i]
			if strings.TrimSuffix(repo.Spec.URL, "/") != url {
				continue
			}
			patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`,
				meta.ReconcileRequestAnnotation, time.Now().Format(time.RFC3339Nano)))
			if err := c.Patch(ctx, repo, patch); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("announcing a push to %s: %w", url, err)
			}
		}
	}
	return nil
}

// write writes files (path → content) into the working copy.
func (r *gitRepo) write(files map[string]string) {
	r.t.Helper()
	for path, content := range files {
		full := filepath.Join(r.dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

// commitAndPush commits everything and pushes main, returning the commit.
func (r *gitRepo) commitAndPush(message string) string {
	r.t.Helper()
	r.git("", "add", "-A")
	r.git("", "commit", "--quiet", "-m", message)
	r.git("", "push", "--quiet", "origin", "HEAD:main")
	return r.git("", "rev-parse", "HEAD")
}

// fluxSync creates what `flux create source git` and `flux create
// kustomization` would: a basic-auth Secret, a GitRepository for main and a
// Kustomization that applies path and waits for what it applied.
func fluxSync(t *testing.T, name, repoURL, path string) {
	t.Helper()
	fluxSyncWith(t, name, repoURL, path)
}

// fluxSyncWith is fluxSync with more Kustomizations on the same source:
// each extra one applies its path once the ones before it are Ready
// (dependsOn).
func fluxSyncWith(t *testing.T, name, repoURL, path string, dependents ...string) {
	t.Helper()
	fluxSyncOn(t, k8sClient, name, repoURL, path, dependents...)
}

// fluxSyncOn is fluxSyncWith on the cluster of client c.
func fluxSyncOn(t *testing.T, c client.Client, name, repoURL, path string, dependents ...string) {
	t.Helper()
	fluxCreate(t, c, name, repoURL, path, nil, dependents...)
}

// fluxCreate is fluxSyncOn with the GitRepository and the last
// Kustomization changed by customize, when set, before they are created.
func fluxCreate(t *testing.T, c client.Client, name, repoURL, path string,
	customize func(*sourcev1.GitRepository, *kustomizev1.Kustomization), dependents ...string) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	ns := "flux-system"
	g.Expect(c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-auth"},
		StringData: map[string]string{"username": env.Git.Username, "password": env.Git.Password},
	})).To(Succeed())
	source := &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: sourcev1.GitRepositorySpec{
			URL: repoURL,
			// Long: people's pushes are announced (announcePush) and
			// sluice asks Flux to fetch after its own.
			Interval:  metav1.Duration{Duration: 10 * time.Minute},
			Reference: &sourcev1.GitRepositoryRef{Branch: "main"},
			SecretRef: &meta.LocalObjectReference{Name: name + "-auth"},
		},
	}
	ks := &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kustomizev1.KustomizationSpec{
			Interval:      metav1.Duration{Duration: time.Minute},
			RetryInterval: &metav1.Duration{Duration: 5 * time.Second},
			Path:          path,
			Prune:         true,
			Wait:          true,
			Timeout:       &metav1.Duration{Duration: 2 * time.Minute},
			SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: name},
		},
	}
	// The dependents are the Kustomization as flux create makes it, on
	// other paths.
	plain := ks.DeepCopy()
	if customize != nil {
		customize(source, ks)
	}
	g.Expect(c.Create(ctx, source)).To(Succeed())
	previous := name
	for i, p := range dependents {
		dependent := plain.DeepCopy()
		dependent.Name = fmt.Sprintf("%s-after-%d", name, i+1)
		dependent.Spec.Path = p
		dependent.Spec.RetryInterval = &metav1.Duration{Duration: 2 * time.Second}
		dependent.Spec.DependsOn = []kustomizev1.DependencyReference{{Name: previous}}
		g.Expect(c.Create(ctx, dependent)).To(Succeed())
		previous = dependent.Name
	}
	g.Expect(c.Create(ctx, ks)).To(Succeed())
}

// update changes obj with mutate and updates it, retrying on conflicts.
func update(g Gomega, obj client.Object, mutate func()) {
	kubetest.Update(g, k8sClient, obj, mutate)
}

// webApp is what a user's repository holds for the app the scenarios
// deliver: a namespace and a Deployment web with the given replicas and
// image, and annotations (lines such as "sluice.dev/strategy: canary").
func webApp(ns string, replicas int, image string, annotations ...string) string {
	return namespace(ns) + "---\n" + deployment("web", ns, strconv.Itoa(replicas), image, annotations...)
}
