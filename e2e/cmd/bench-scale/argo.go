package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// argoPrefix names the namespaces of the Rollouts Argo runs alone.
const argoPrefix = "argo"

// argoResult is what Argo Rollouts alone took to bring the fleet's Rollouts
// up.
type argoResult struct {
	created, healthy *milestone
	cleanedUp        time.Duration
	// cpu is what the stack's processes used until all were Healthy, and
	// requests what the API server answered meanwhile.
	cpu      stackCPU
	requests apiRequests
}

// runArgoAlone creates the fleet's Rollouts directly, with the apps' pod
// template and sluice's built-in canary, one replica each, times them
// until all are Healthy, then deletes them and waits until their pods are
// gone, so that sluice starts on an empty cluster.
func (b *bench) runArgoAlone(ctx context.Context) (*argoResult, error) {
	f := b.fleet
	res := &argoResult{
		created: &milestone{name: "created", total: f.apps()},
		healthy: &milestone{name: "Healthy", total: f.apps()},
	}
	for i := range f.kustomizations {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.namespace(argoPrefix, i)}}
		if err := b.kube.Create(ctx, ns); err != nil {
			return nil, err
		}
	}

	cpu0, err := b.stackCPU()
	if err != nil {
		return nil, err
	}
	requests0, err := b.scrapeAPIRequests(ctx)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	created := make(chan error, 1)
	var createdCount int
	var mu sync.Mutex
	go func() {
		created <- b.forEachApp(ctx, func(i, j int) error {
			app := f.app(j)
			r := &rolloutsv1.Rollout{
				ObjectMeta: metav1.ObjectMeta{Namespace: f.namespace(argoPrefix, i), Name: app},
				Spec: rolloutsv1.RolloutSpec{
					Replicas: ptr.To[int32](1),
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
					Template: podTemplate(app),
					Strategy: builtinCanary(),
				},
			}
			if err := b.kube.Create(ctx, r); err != nil {
				return err
			}
			mu.Lock()
			createdCount++
			mu.Unlock()
			return nil
		})
	}()
	var createErr error
	createDone := false
	err = poll(ctx, b.out, started, b.opts.timeout, []*milestone{res.created, res.healthy}, func(ctx context.Context, elapsed time.Duration) error {
		if !createDone {
			select {
			case createErr = <-created:
				createDone = true
			default:
			}
		}
		if createErr != nil {
			return createErr
		}
		mu.Lock()
		res.created.observe(createdCount, elapsed)
		mu.Unlock()
		var rollouts rolloutsv1.RolloutList
		if err := b.watched.List(ctx, &rollouts, client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		healthy := 0
		for _, r := range rollouts.Items {
			if strings.HasPrefix(r.Namespace, argoPrefix+"-") && r.Status.Phase == rolloutsv1.RolloutPhaseHealthy && r.Status.AvailableReplicas == 1 {
				healthy++
			}
		}
		res.healthy.observe(healthy, elapsed)
		return nil
	})
	if createErr != nil {
		return nil, fmt.Errorf("creating Rollouts: %w", createErr)
	}
	if err != nil {
		return nil, fmt.Errorf("Argo Rollouts alone: %w", err)
	}
	cpu1, err := b.stackCPU()
	if err != nil {
		return nil, err
	}
	res.cpu = cpu1.since(cpu0)
	requests1, err := b.scrapeAPIRequests(ctx)
	if err != nil {
		return nil, err
	}
	res.requests = requests1.since(requests0)

	cleanup := time.Now()
	for i := range f.kustomizations {
		if err := b.kube.DeleteAllOf(ctx, &rolloutsv1.Rollout{}, client.InNamespace(f.namespace(argoPrefix, i))); err != nil {
			return nil, err
		}
	}
	gone := &milestone{name: "pods gone", total: f.apps()}
	err = poll(ctx, b.out, cleanup, b.opts.timeout, []*milestone{gone}, func(ctx context.Context, elapsed time.Duration) error {
		left, err := b.countPods(ctx, argoPrefix)
		if err != nil {
			return err
		}
		gone.observe(f.apps()-left, elapsed)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("deleting Argo's Rollouts: %w", err)
	}
	res.cleanedUp = time.Since(cleanup)
	return res, nil
}

// countPods counts the pods in the namespaces of prefix.
func (b *bench) countPods(ctx context.Context, prefix string) (int, error) {
	var pods corev1.PodList
	if err := b.kube.List(ctx, &pods); err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pods.Items {
		if strings.HasPrefix(p.Namespace, prefix+"-") {
			n++
		}
	}
	return n, nil
}

// forEachApp calls do for every app of every Kustomization, a few at a
// time, and returns the first error.
func (b *bench) forEachApp(ctx context.Context, do func(i, j int) error) error {
	const workers = 8
	type app struct{ i, j int }
	apps := make(chan app)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range apps {
				if err := do(a.i, a.j); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range b.fleet.kustomizations {
		for j := range b.fleet.appsPerKustomization {
			select {
			case apps <- app{i, j}:
			case err = <-errs:
				break feed
			case <-ctx.Done():
				err = ctx.Err()
				break feed
			}
		}
	}
	close(apps)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}
