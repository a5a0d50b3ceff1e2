package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	appsv1 "k8s.io/api/apps/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// fleetPrefix names the namespaces of the fleet sluice delivers.
const fleetPrefix = "fleet"

// sluiceResult is what sluice took to adopt the fleet, and what it cost.
type sluiceResult struct {
	applied, deliveries, healthy, recorded *milestone
	// commits are sluice's commits on main; records counts their
	// Sluice-Action trailers by action.
	commits []sluiceCommit
	records map[string]int
	// started is when the Kustomizations were created.
	started time.Time
	writes  gitWrites
	// requests counts sluice's requests to the API server by method,
	// reconciles its reconciles by controller, and commitsMade the commits
	// its writes made by how (edited, replayed onto a moved branch).
	requests, reconciles, commitsMade map[string]int
	usage                             usage
	// errors counts the error lines of sluice's logs by message.
	errors map[string]int
	// cpu0 is the stack's CPU time when the Kustomizations were created;
	// cpuApplied, cpuHealthy and cpuDone are what it used from then until
	// Flux had applied every Kustomization, until every Rollout was
	// Healthy, and until the end.
	cpu0, cpuApplied, cpuHealthy, cpuDone stackCPU
	// personCommits are the commits a person pushed during the burst, and
	// personLost those of them main does not hold at the end.
	personCommits, personLost []string
	// apiRequests0 are the API server's requests when the Kustomizations
	// were created, apiRequests those it answered from then to the end.
	apiRequests0, apiRequests apiRequests
}

// sluiceProcess is one running sluice: the stack's own, or one shard's.
type sluiceProcess struct {
	name       string
	pid        int
	metricsURL string
}

// startSluice starts one sluice, or one per shard, each watching only its
// shard's Kustomizations.
func (b *bench) startSluice(ctx context.Context) error {
	if b.fleet.shards <= 1 {
		if err := b.stack.StartSluice(ctx); err != nil {
			return err
		}
		b.sluices = []sluiceProcess{{name: "sluice", pid: b.stack.SluicePID(), metricsURL: b.stack.SluiceMetricsURL}}
		return nil
	}
	for i := range b.fleet.shards {
		shard := fmt.Sprintf("shard%d", i+1)
		r, err := b.stack.StartSluiceReplica(ctx, "sluice-"+shard, "--watch-label-selector="+shardLabel+"="+shard)
		if err != nil {
			return err
		}
		b.sluices = append(b.sluices, sluiceProcess{name: r.Name, pid: r.PID(), metricsURL: r.MetricsURL})
	}
	return nil
}

// runSluice pushes the fleet to Git in one commit, creates Flux's objects,
// and times what follows until every app's stable template is in Git.
func (b *bench) runSluice(ctx context.Context) (*sluiceResult, error) {
	f := b.fleet
	res := &sluiceResult{
		applied:    &milestone{name: "applied", total: f.kustomizations},
		deliveries: &milestone{name: "Deliveries", total: f.apps()},
		healthy:    &milestone{name: "Healthy", total: f.apps()},
		recorded:   &milestone{name: "stable in Git", total: f.apps()},
	}
	git := b.stack.Git
	repoURL, err := git.CreateRepository(repoName)
	if err != nil {
		return nil, err
	}
	commit, err := pushFleet(ctx, f, repoURL, git.Username, git.Password, filepath.Join(b.dir, "clone"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(b.out, "pushed %d Deployments in %d folders as commit %.12s\n", f.apps(), f.kustomizations, commit)
	if err := b.startSluice(ctx); err != nil {
		return nil, fmt.Errorf("starting sluice: %w", err)
	}

	if b.opts.cpuProfile != "" {
		profiling, stopProfiling := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer func() {
			stopProfiling()
			wg.Wait()
		}()
		for _, p := range b.sluices {
			wg.Go(func() {
				files, err := recordProfiles(profiling, p, b.opts.cpuProfile)
				if err != nil {
					fmt.Fprintf(b.out, "recording the CPU profile of %s: %v\n", p.name, err)
				}
				if len(files) > 0 {
					fmt.Fprintf(b.out, "CPU profile of %s: %d files, %s to %s\n", p.name, len(files), files[0], files[len(files)-1])
				}
			})
		}
	}

	if res.cpu0, err = b.stackCPU(); err != nil {
		return nil, err
	}
	if res.apiRequests0, err = b.scrapeAPIRequests(ctx); err != nil {
		return nil, err
	}
	started := time.Now()
	for _, obj := range f.fluxObjects(repoURL, git.Username, git.Password) {
		if err := b.kube.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	stopPerson := func() ([]string, error) { return nil, nil }
	if b.opts.personEvery > 0 {
		stopPerson = startPerson(ctx, filepath.Join(b.dir, "clone"), b.opts.personEvery)
	}
	milestones := []*milestone{res.applied, res.deliveries, res.healthy, res.recorded}
	err = poll(ctx, b.out, started, b.opts.timeout, milestones, func(ctx context.Context, elapsed time.Duration) error {
		return b.observeFleet(ctx, res, elapsed)
	})
	personPushes, personErr := stopPerson()
	if personErr != nil {
		return res, fmt.Errorf("a person pushing during the burst: %w", personErr)
	}
	if err != nil {
		return res, fmt.Errorf("sluice: %w", err)
	}
	res.personCommits = personPushes
	if res.personLost, err = lostCommits(ctx, filepath.Join(git.Root, repoName+".git"), personPushes); err != nil {
		return res, err
	}
	cpu, err := b.stackCPU()
	if err != nil {
		return res, err
	}
	res.cpuDone = cpu.since(res.cpu0)
	requests, err := b.scrapeAPIRequests(ctx)
	if err != nil {
		return res, err
	}
	res.apiRequests = requests.since(res.apiRequests0)

	res.started = started
	if res.commits, res.records, err = sluiceCommits(ctx, filepath.Join(git.Root, repoName+".git")); err != nil {
		return res, err
	}
	res.errors = map[string]int{}
	for _, p := range b.sluices {
		w, err := scrapeGitWrites(ctx, p.metricsURL)
		if err != nil {
			return res, err
		}
		res.writes.add(w)
		if res.requests == nil {
			res.requests, res.reconciles, res.commitsMade = map[string]int{}, map[string]int{}, map[string]int{}
		}
		for counter, into := range map[[2]string]map[string]int{
			{"rest_client_requests_total", "method"}:             res.requests,
			{"controller_runtime_reconcile_total", "controller"}: res.reconciles,
			{"sluice_git_commits_total", "made"}:                 res.commitsMade,
		} {
			counts, err := scrapeCounter(ctx, p.metricsURL, counter[0], counter[1])
			if err != nil {
				return res, err
			}
			for k, n := range counts {
				into[k] += n
			}
		}
		u, err := processUsage(p.pid)
		if err != nil {
			return res, err
		}
		res.usage = res.usage.add(u)
		for e, n := range logErrors(filepath.Join(b.stack.LogDir(), p.name+".log")) {
			res.errors[e] += n
		}
	}
	return res, nil
}

// observeFleet counts, at elapsed, the Kustomizations Flux applied (seen
// Ready with an applied revision once: sluice's pushes make them reconcile
// again afterwards), the Deliveries, the apps a Healthy Rollout serves with
// their Deployment at zero, and the Deliveries whose stable template Flux
// applied from Git.
func (b *bench) observeFleet(ctx context.Context, res *sluiceResult, elapsed time.Duration) error {
	if !res.applied.reached() {
		var list kustomizev1.KustomizationList
		if err := b.watched.List(ctx, &list, client.InNamespace(stack.FluxNamespace), client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		for _, ks := range list.Items {
			if ks.Status.LastAppliedRevision != "" && apimeta.IsStatusConditionTrue(ks.Status.Conditions, meta.ReadyCondition) {
				b.applied[ks.Name] = true
			}
		}
		res.applied.observe(len(b.applied), elapsed)
		if res.applied.reached() {
			cpu, err := b.stackCPU()
			if err != nil {
				return err
			}
			res.cpuApplied = cpu.since(res.cpu0)
		}
	}
	if !res.deliveries.reached() || !res.recorded.reached() {
		var list deliveryv1.DeliveryList
		if err := b.watched.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		exist, recorded := 0, 0
		for _, d := range list.Items {
			if !strings.HasPrefix(d.Namespace, fleetPrefix+"-") {
				continue
			}
			exist++
			if d.Spec.Promotion.Stable != nil {
				recorded++
			}
		}
		res.deliveries.observe(exist, elapsed)
		res.recorded.observe(recorded, elapsed)
	}
	if !res.healthy.reached() {
		var rollouts rolloutsv1.RolloutList
		if err := b.watched.List(ctx, &rollouts, client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		var deployments appsv1.DeploymentList
		if err := b.watched.List(ctx, &deployments, client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		// A Deployment sluice scaled to zero is parked once its pods are
		// gone.
		parked, scaled := map[client.ObjectKey]bool{}, 0
		for _, d := range deployments.Items {
			if ptr.Deref(d.Spec.Replicas, 1) != 0 {
				continue
			}
			scaled++
			if d.Status.Replicas == 0 {
				parked[client.ObjectKeyFromObject(&d)] = true
			}
		}
		healthy, serving := 0, 0
		for _, r := range rollouts.Items {
			if !strings.HasPrefix(r.Namespace, fleetPrefix+"-") ||
				r.Status.Phase != rolloutsv1.RolloutPhaseHealthy || r.Status.AvailableReplicas != 1 {
				continue
			}
			serving++
			if parked[client.ObjectKeyFromObject(&r)] {
				healthy++
			}
		}
		res.healthy.observe(healthy, elapsed)
		res.healthy.detail = fmt.Sprintf("Rollouts serving %d, Deployments scaled to 0 %d, at 0 %d", serving, scaled, len(parked))
		if res.healthy.reached() {
			cpu, err := b.stackCPU()
			if err != nil {
				return err
			}
			res.cpuHealthy = cpu.since(res.cpu0)
		}
	}
	return nil
}

// sluiceCommit is one of sluice's commits: when, and its Sluice-Action
// lines by action.
type sluiceCommit struct {
	at      time.Time
	records map[string]int
}

// stablePushed tells when, from the Kustomizations' creation, the commit
// that brought sluice's stable records to apps was made: the stable
// templates are in Git from then on, before Flux applies them back.
func (res *sluiceResult) stablePushed(apps int) (time.Duration, bool) {
	promoted := 0
	for _, c := range res.commits {
		if promoted += c.records["promote"]; promoted >= apps {
			return c.at.Sub(res.started), true
		}
	}
	return 0, false
}

// sluiceCommits returns the commits on main that carry sluice's
// Sluice-Delivery trailer, oldest first, and their Sluice-Action lines by
// action (a commit that records several changes holds several).
func sluiceCommits(ctx context.Context, gitDir string) ([]sluiceCommit, map[string]int, error) {
	out, err := runGit(ctx, "", "--git-dir", gitDir, "log", "main", "--reverse", "--format=@@%ct%n%B", "--grep", "^Sluice-Delivery: ")
	if err != nil {
		return nil, nil, err
	}
	var commits []sluiceCommit
	records := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		if at, ok := strings.CutPrefix(line, "@@"); ok {
			seconds, err := strconv.ParseInt(at, 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("commit time %q: %w", at, err)
			}
			commits = append(commits, sluiceCommit{at: time.Unix(seconds, 0), records: map[string]int{}})
			continue
		}
		if action, ok := strings.CutPrefix(line, "Sluice-Action: "); ok && len(commits) > 0 {
			action = strings.TrimSpace(action)
			records[action]++
			commits[len(commits)-1].records[action]++
		}
	}
	return commits, records, nil
}
