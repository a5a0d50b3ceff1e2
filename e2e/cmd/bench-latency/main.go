// Command bench-latency measures sluice's steady-state latencies on the
// local stack, as p50 and p95 over --events releases of one app:
//
//   - a new Deployment template applied by Flux → the Rollout carries it;
//   - an approval merge applied by Flux → the Rollout leaves its gate;
//   - a Rollout completed → the stable commit pushed;
//   - that push → a reconcile requested from Flux;
//
// and, in the same run against the same Git server, the git CLI fetching,
// committing and pushing, which the push path is compared with.
//
// Each release is a person's commit of a new image, followed by a
// reconcile request as a Flux Receiver would make on the push, and the
// merge of the promotion branch sluice pushes for the manual gate. The
// GitRepository's interval is ten minutes: Flux fetches when asked, so what
// is measured is sluice, not Flux's polling. Times are taken when this
// program's watches deliver an object, and when its Git server takes a
// push in.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

const (
	namespace = "latency"
	app       = "web"
	repoName  = "latency"
	// baselineRepo is where the git CLI writes, so that it never races
	// sluice.
	baselineRepo = "baseline"
	appImage     = "registry.example/web:v%d"
	// inClusterTarget is the p95 the in-cluster paths aim at.
	inClusterTarget = 500 * time.Millisecond
	// pushTargetRatio is the p95 ratio the push path aims at against the
	// git CLI.
	pushTargetRatio = 1.5
)

type options struct {
	bin, root, sluice string
	events            int
	timeout           time.Duration
	keepLogs          bool
}

func main() {
	var opts options
	flag.IntVar(&opts.events, "events", 50, "the number of releases, each measuring every path once")
	flag.DurationVar(&opts.timeout, "timeout", 2*time.Minute, "how long one release may take before the run fails")
	flag.StringVar(&opts.bin, "bin", "bin", "folder of the tools 'make tools' built")
	flag.StringVar(&opts.root, "root", ".", "the sluice source tree")
	flag.StringVar(&opts.sluice, "sluice", "", "the sluice binary; built from --root when empty")
	flag.BoolVar(&opts.keepLogs, "keep-logs", false, "keep the components' logs when the run succeeds too")
	flag.Parse()
	if opts.events < 1 {
		fmt.Fprintln(os.Stderr, "bench-latency: --events must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())
	if err := run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "\nbench-latency failed: %v\n", err)
		os.Exit(1)
	}
}

// bench is the stack, the clones and what was seen.
type bench struct {
	opts  options
	out   io.Writer
	dir   string
	stack *stack.Stack
	kube  client.WithWatch
	clone string
	// baseline is the clone the git CLI writes in.
	baseline string

	deployments, rollouts, deliveries, sources, pushes *timeline
}

// push is a push the Git server took in, and what main said then.
type push struct {
	repository, main, message string
}

func run(ctx context.Context, opts options, out io.Writer) (err error) {
	for _, p := range []*string{&opts.bin, &opts.root} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return err
	}
	b := &bench{opts: opts, out: out, dir: dir,
		deployments: newTimeline(), rollouts: newTimeline(), deliveries: newTimeline(), sources: newTimeline(), pushes: newTimeline()}
	defer func() {
		if err != nil {
			b.explain(os.Stderr)
		}
		if b.stack != nil {
			b.stack.Stop()
		}
		if err == nil && !opts.keepLogs {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "the logs of every component are kept in %s\n", filepath.Join(dir, "logs"))
		}
	}()
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := b.setUp(ctx); err != nil {
		return err
	}
	var m measurements
	for i := range opts.events {
		if err := b.release(ctx, i+2, &m); err != nil {
			return fmt.Errorf("release %d: %w", i+1, err)
		}
	}
	m.print(out)
	return nil
}

func (b *bench) start(ctx context.Context) error {
	sluice := b.opts.sluice
	if sluice == "" {
		sluice = filepath.Join(b.dir, "sluice")
		build := exec.CommandContext(ctx, "go", "build", "-o", sluice, ".")
		build.Dir = b.opts.root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building sluice: %v\n%s", err, out)
		}
	}
	fmt.Fprintln(b.out, "starting the stack")
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	s, err := stack.Start(startCtx, stack.Options{
		Dir:         b.dir,
		BinDir:      b.opts.bin,
		CRDDir:      filepath.Join(b.opts.root, "config", "crd", "bases"),
		InstallDir:  filepath.Join(b.opts.root, "config", "default"),
		Sluice:      sluice,
		GitUsername: "bench",
		GitPassword: stack.RandomSecret(),
	})
	if err != nil {
		return err
	}
	b.stack = s
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, deliveryv1.AddToScheme, sourcev1.AddToScheme, kustomizev1.AddToScheme, rolloutsv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	if b.kube, err = client.NewWithWatch(s.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	for _, w := range []struct {
		list client.ObjectList
		t    *timeline
		ns   string
	}{
		{&appsv1.DeploymentList{}, b.deployments, namespace},
		{&rolloutsv1.RolloutList{}, b.rollouts, namespace},
		{&deliveryv1.DeliveryList{}, b.deliveries, namespace},
		{&sourcev1.GitRepositoryList{}, b.sources, stack.FluxNamespace},
	} {
		if err := watchInto(ctx, b.kube, w.list, w.t, client.InNamespace(w.ns)); err != nil {
			return err
		}
	}
	s.Git.OnPush(func(repository string) {
		if repository != repoName {
			return
		}
		gitDir := filepath.Join(s.Git.Root, repoName+".git")
		main, _ := runGit(context.Background(), "", "--git-dir", gitDir, "rev-parse", "refs/heads/main")
		message, _ := runGit(context.Background(), "", "--git-dir", gitDir, "log", "-1", "--format=%B", "refs/heads/main")
		b.pushes.add(push{repository: repository, main: main, message: message})
	})
	return nil
}

const policyYAML = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: gated
  namespace: latency
spec:
  canary:
    steps:
      - setWeight: 50
      - pause: {}
`

const appYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: latency
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: latency
  annotations:
    sluice.dev/strategy: canary
    sluice.dev/policy: gated
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/web:v1
`

// setUp pushes the app, creates Flux's objects and waits until the first
// stable template is recorded and applied.
func (b *bench) setUp(ctx context.Context) error {
	git := b.stack.Git
	for _, name := range []string{repoName, baselineRepo} {
		if _, err := git.CreateRepository(name); err != nil {
			return err
		}
	}
	b.clone, b.baseline = filepath.Join(b.dir, "clone"), filepath.Join(b.dir, "baseline")
	for dir, name := range map[string]string{b.clone: repoName, b.baseline: baselineRepo} {
		u, err := url.Parse(git.RepositoryURL(name))
		if err != nil {
			return err
		}
		u.User = url.UserPassword(git.Username, git.Password)
		if _, err := runGit(ctx, "", "clone", "--quiet", u.String(), dir); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(b.baseline, "counter"), []byte("0\n"), 0o644); err != nil {
		return err
	}
	if err := commitAndPush(ctx, b.baseline, "Start counting"); err != nil {
		return err
	}
	for name, content := range map[string]string{"apps/web.yaml": appYAML, "apps/policy.yaml": policyYAML} {
		path := filepath.Join(b.clone, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := commitAndPush(ctx, b.clone, "Deliver web as a gated canary"); err != nil {
		return err
	}
	ns := stack.FluxNamespace
	for _, obj := range []client.Object{
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName + "-auth"},
			StringData: map[string]string{"username": git.Username, "password": git.Password},
		},
		&sourcev1.GitRepository{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName},
			Spec: sourcev1.GitRepositorySpec{
				URL:       git.RepositoryURL(repoName),
				Interval:  metav1.Duration{Duration: 10 * time.Minute},
				Reference: &sourcev1.GitRepositoryRef{Branch: "main"},
				SecretRef: &meta.LocalObjectReference{Name: repoName + "-auth"},
			},
		},
		&kustomizev1.Kustomization{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName},
			Spec: kustomizev1.KustomizationSpec{
				Interval:      metav1.Duration{Duration: 10 * time.Minute},
				RetryInterval: &metav1.Duration{Duration: 30 * time.Second},
				Path:          "./apps",
				Prune:         true,
				Wait:          true,
				Timeout:       &metav1.Duration{Duration: 5 * time.Minute},
				SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: repoName},
			},
		},
	} {
		if err := b.kube.Create(ctx, obj); err != nil {
			return err
		}
	}
	fmt.Fprintln(b.out, "waiting for the adoption and the first stable record")
	ctx, cancel := context.WithTimeout(ctx, b.opts.timeout)
	defer cancel()
	_, _, err := b.deliveries.waitFor(ctx, 0, "the first stable record applied", func(o any) bool {
		d := o.(*deliveryv1.Delivery)
		return d.Spec.Promotion.Stable != nil && d.Spec.Promotion.Stable.TemplateHash == d.Status.StableTemplateHash &&
			d.Status.Phase == deliveryv1.PhaseHealthy
	})
	return err
}

// imageLine is the app's image in its Deployment file.
var imageLine = regexp.MustCompile(`image: registry\.example/web:v\d+`)

// release rolls out version v of the app and measures each path once.
func (b *bench) release(ctx context.Context, v int, m *measurements) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.timeout)
	defer cancel()
	image := fmt.Sprintf(appImage, v)
	hasImage := func(spec corev1.PodSpec) bool { return len(spec.Containers) > 0 && spec.Containers[0].Image == image }
	deployments, rollouts, deliveries, sources, pushes :=
		b.deployments.mark(), b.rollouts.mark(), b.deliveries.mark(), b.sources.mark(), b.pushes.mark()

	// A person commits the new image; a Receiver asks Flux to fetch.
	if err := b.editAndPush(ctx, "apps/web.yaml", fmt.Sprintf("Release web %s", image), func(s string) string {
		return imageLine.ReplaceAllString(s, "image: "+image)
	}); err != nil {
		return err
	}

	// Applied → the Rollout carries it.
	applied, _, err := b.deployments.waitFor(ctx, deployments, "the Deployment with "+image, func(o any) bool {
		return hasImage(o.(*appsv1.Deployment).Spec.Template.Spec)
	})
	if err != nil {
		return err
	}
	carried, _, err := b.rollouts.waitFor(ctx, rollouts, "the Rollout with "+image, func(o any) bool {
		return hasImage(o.(*rolloutsv1.Rollout).Spec.Template.Spec)
	})
	if err != nil {
		return err
	}
	m.template = append(m.template, carried.at.Sub(applied.at))

	// The gate: sluice pushes a promotion branch, a person merges it.
	gated, _, err := b.deliveries.waitFor(ctx, deliveries, "the promotion branch for "+image, func(o any) bool {
		d := o.(*deliveryv1.Delivery)
		return d.Status.Phase == deliveryv1.PhaseWaitingForApproval && d.Status.PendingPromotionBranch != ""
	})
	if err != nil {
		return err
	}
	d := gated.obj.(*deliveryv1.Delivery)
	candidate, gate := d.Status.CandidateTemplateHash, ptr.Deref(d.Status.CurrentStep, 0)
	if err := b.merge(ctx, d.Status.PendingPromotionBranch); err != nil {
		return err
	}
	approved, _, err := b.deliveries.waitFor(ctx, deliveries, "the approval applied", func(o any) bool {
		return slices.ContainsFunc(o.(*deliveryv1.Delivery).Spec.Promotion.Approvals, func(a deliveryv1.Approval) bool {
			return a.TemplateHash == candidate && a.Step == gate
		})
	})
	if err != nil {
		return err
	}
	left, err := b.rollouts.firstAfter(ctx, rollouts, approved.at, "the Rollout past its gate", func(o any) bool {
		r := o.(*rolloutsv1.Rollout)
		return hasImage(r.Spec.Template.Spec) && ptr.Deref(r.Status.CurrentStepIndex, 0) > gate
	})
	if err != nil {
		return err
	}
	m.approval = append(m.approval, left.at.Sub(approved.at))

	// Completed → the stable commit pushed → Flux asked to fetch it.
	// NOTE: a Rollout's status says Healthy and stable for a moment after
	// its template changed, before Argo looks: completion is the
	// candidate's ReplicaSet, the one past the gate, becoming stable.
	canary := left.obj.(*rolloutsv1.Rollout).Status.CurrentPodHash
	completed, err := b.rollouts.firstAfter(ctx, rollouts, left.at, "the Rollout completed", func(o any) bool {
		r := o.(*rolloutsv1.Rollout)
		return r.Status.Phase == rolloutsv1.RolloutPhaseHealthy && r.Status.StableRS == canary
	})
	if err != nil {
		return err
	}
	promoteTrailer := "Sluice-Action: promote"
	pushed, err := b.pushes.firstAfter(ctx, pushes, completed.at, "the stable commit", func(o any) bool {
		return strings.Contains(o.(push).message, promoteTrailer) && strings.Contains(o.(push).message, candidate)
	})
	if err != nil {
		return err
	}
	m.stable = append(m.stable, pushed.at.Sub(completed.at))
	requested, err := b.sources.firstAfter(ctx, sources, pushed.at, "the reconcile request", func(o any) bool {
		return o.(*sourcev1.GitRepository).Annotations[meta.ReconcileRequestAnnotation] != ""
	})
	if err != nil {
		return err
	}
	m.request = append(m.request, requested.at.Sub(pushed.at))

	// The git CLI does what sluice did on the same server.
	started := time.Now()
	if err := b.count(ctx, v); err != nil {
		return err
	}
	m.gitCLI = append(m.gitCLI, time.Since(started))

	// The next release starts once Flux applied the record.
	_, _, err = b.deliveries.waitFor(ctx, deliveries, "the stable record applied", func(o any) bool {
		d := o.(*deliveryv1.Delivery)
		return d.Spec.Promotion.Stable != nil && d.Spec.Promotion.Stable.TemplateHash == candidate
	})
	if err == nil && v%10 == 0 {
		fmt.Fprintf(b.out, "  %d releases measured\n", v-1)
	}
	return err
}

// editAndPush edits a file of the app's repository as a person does, on
// the head of main, pushes it and asks Flux to fetch.
func (b *bench) editAndPush(ctx context.Context, path, message string, edit func(string) string) error {
	for attempt := 0; ; attempt++ {
		if _, err := runGit(ctx, b.clone, "pull", "--quiet", "--rebase", "origin", "main"); err != nil {
			return err
		}
		full := filepath.Join(b.clone, path)
		content, err := os.ReadFile(full)
		if err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(edit(string(content))), 0o644); err != nil {
			return err
		}
		if err := commitAndPush(ctx, b.clone, message); err == nil {
			return b.requestReconcile(ctx)
		} else if attempt == 5 {
			return err
		}
		// sluice pushed meanwhile: start again from its head.
		if _, err := runGit(ctx, b.clone, "reset", "--quiet", "--hard", "origin/main"); err != nil {
			return err
		}
	}
}

// merge merges a promotion branch into main as a person does, and asks
// Flux to fetch.
func (b *bench) merge(ctx context.Context, branch string) error {
	for attempt := 0; ; attempt++ {
		steps := [][]string{
			{"fetch", "--quiet", "origin", "main", branch},
			{"reset", "--quiet", "--hard", "origin/main"},
			{"merge", "--quiet", "--no-ff", "-m", "Merge " + branch, "origin/" + branch},
			{"push", "--quiet", "origin", "HEAD:main"},
		}
		var err error
		for _, args := range steps {
			if _, err = runGit(ctx, b.clone, args...); err != nil {
				break
			}
		}
		if err == nil {
			return b.requestReconcile(ctx)
		}
		if attempt == 5 {
			return err
		}
	}
}

// count is the git CLI's write: fetch, change a file, commit, push.
func (b *bench) count(ctx context.Context, v int) error {
	if _, err := runGit(ctx, b.baseline, "pull", "--quiet", "--ff-only", "origin", "main"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.baseline, "counter"), []byte(fmt.Sprintf("%d\n", v)), 0o644); err != nil {
		return err
	}
	return commitAndPush(ctx, b.baseline, fmt.Sprintf("Count %d", v))
}

// requestReconcile asks Flux to fetch the repository now, as a Receiver
// does on a push event.
func (b *bench) requestReconcile(ctx context.Context) error {
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`,
		meta.ReconcileRequestAnnotation, time.Now().Format(time.RFC3339Nano)))
	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: repoName}}
	return b.kube.Patch(ctx, repo, patch)
}

func commitAndPush(ctx context.Context, dir, message string) error {
	for _, args := range [][]string{{"add", "-A"}, {"commit", "--quiet", "-m", message}, {"push", "--quiet", "origin", "HEAD:main"}} {
		if _, err := runGit(ctx, dir, args...); err != nil {
			return err
		}
	}
	return nil
}

// runGit runs git, in dir when given, as the benchmark's author.
func runGit(ctx context.Context, dir string, args ...string) (string, error) {
	return stack.Git(ctx, dir, "Bench", "bench@example.com", args...)
}

// measurements are the latencies of each path, one per release.
type measurements struct {
	template, approval, stable, request, gitCLI []time.Duration
}

// percentile is the p-th percentile of ds, by the nearest-rank method.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

func (m *measurements) print(out io.Writer) {
	fmt.Fprintf(out, "\nsteady-state latency over %d releases\n\n", len(m.template))
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "path\tp50\tp95\ttarget (p95)\t")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	inCluster := func(name string, ds []time.Duration) {
		p95 := percentile(ds, 95)
		fmt.Fprintf(w, "%s\t%s\t%s\t≤ %s: %s\t\n", name, ms(percentile(ds, 50)), ms(p95), ms(inClusterTarget), verdict(p95 <= inClusterTarget))
	}
	inCluster("new template applied → Rollout carries it", m.template)
	inCluster("approval merge applied → Rollout leaves its gate", m.approval)
	cli := percentile(m.gitCLI, 95)
	ratio := percentile(m.stable, 95).Seconds() / cli.Seconds()
	fmt.Fprintf(w, "Rollout completed → stable commit pushed\t%s\t%s\t≤ %.1f× git CLI: %.2f×, %s\t\n",
		ms(percentile(m.stable, 50)), ms(percentile(m.stable, 95)), pushTargetRatio, ratio, verdict(ratio <= pushTargetRatio))
	inCluster("stable commit pushed → reconcile requested", m.request)
	fmt.Fprintf(w, "git CLI: fetch, commit, push (same server)\t%s\t%s\t\t\n", ms(percentile(m.gitCLI, 50)), ms(cli))
	_ = w.Flush()
}
