// Command sluice is the sluice operator: progressive delivery for Flux, with
// Git as the source of truth.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/runtime/client"
	helper "github.com/fluxcd/pkg/runtime/controller"
	"github.com/fluxcd/pkg/runtime/events"
	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/fluxcd/pkg/runtime/leaderelection"
	"github.com/fluxcd/pkg/runtime/logger"
	"github.com/fluxcd/pkg/runtime/metrics"
	"github.com/fluxcd/pkg/runtime/pprof"
	"github.com/fluxcd/pkg/runtime/probes"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/gitops"
)

const controllerName = "sluice"

func main() {
	var (
		metricsAddr         string
		healthAddr          string
		eventsAddr          string
		gitDir              string
		credentialsOverHTTP bool
		watchLabelSelector  string
		concurrent          int
		clientOptions       client.Options
		logOptions          logger.Options
		leaderElection      leaderelection.Options
		rateLimiterOptions  helper.RateLimiterOptions
		intervalJitter      jitter.IntervalOptions
	)

	pflag.StringVar(&metricsAddr, "metrics-addr", ":8080", "The address the metric endpoint binds to.")
	pflag.StringVar(&healthAddr, "health-addr", ":9440", "The address the health endpoint binds to.")
	pflag.StringVar(&eventsAddr, "events-addr", "", "The address of Flux's notification-controller events endpoint; events go only to the Kubernetes API when empty.")
	pflag.IntVar(&concurrent, "concurrent", 4, "The number of objects each controller reconciles at once.")
	pflag.StringVar(&gitDir, "git-dir", filepath.Join(os.TempDir(), "sluice-git"), "The folder of sluice's working copies of Git repositories.")
	pflag.BoolVar(&credentialsOverHTTP, "insecure-credentials-over-http", false,
		"Send Git passwords and tokens to plain http:// repository URLs too; refused by default, as anyone on the network path could read them.")
	pflag.StringVar(&watchLabelSelector, "watch-label-selector", "",
		"Reconcile only the Kustomizations with matching labels, and the Deliveries they applied, e.g. 'sharding.fluxcd.io/key=shard1': instances with disjoint selectors split a fleet, as Flux's controllers shard.")
	clientOptions.BindFlags(pflag.CommandLine)
	logOptions.BindFlags(pflag.CommandLine)
	leaderElection.BindFlags(pflag.CommandLine)
	rateLimiterOptions.BindFlags(pflag.CommandLine)
	intervalJitter.BindFlags(pflag.CommandLine)
	pflag.Parse()

	logger.SetLogger(logger.NewLogger(logOptions))
	setupLog := ctrl.Log.WithName("setup")

	if err := run(runOptions{
		metricsAddr:         metricsAddr,
		healthAddr:          healthAddr,
		eventsAddr:          eventsAddr,
		concurrent:          concurrent,
		gitDir:              gitDir,
		credentialsOverHTTP: credentialsOverHTTP,
		watchLabelSelector:  watchLabelSelector,
		clientOptions:       clientOptions,
		leaderElection:      leaderElection,
		rateLimiter:         rateLimiterOptions,
		intervalJitter:      intervalJitter,
	}); err != nil {
		setupLog.Error(err, "sluice stopped")
		os.Exit(1)
	}
}

type runOptions struct {
	metricsAddr         string
	healthAddr          string
	eventsAddr          string
	concurrent          int
	gitDir              string
	credentialsOverHTTP bool
	watchLabelSelector  string
	clientOptions       client.Options
	leaderElection      leaderelection.Options
	rateLimiter         helper.RateLimiterOptions
	intervalJitter      jitter.IntervalOptions
}

func run(o runOptions) error {
	if err := setIntervalJitter(o.intervalJitter); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := deliveryv1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := rolloutsv1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kustomizev1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := sourcev1.AddToScheme(scheme); err != nil {
		return err
	}

	watchSelector, err := helper.GetWatchSelector(helper.WatchOptions{LabelSelector: o.watchLabelSelector})
	if err != nil {
		return fmt.Errorf("--watch-label-selector: %w", err)
	}
	leaderElectionID := "sluice-leader-election"
	if o.watchLabelSelector != "" {
		// Each shard elects its own leader.
		leaderElectionID = leaderelection.GenerateID(leaderElectionID, o.watchLabelSelector)
	}

	restConfig := client.GetConfigOrDie(o.clientOptions)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: scheme,
		// The metrics address serves Go's profiles under /debug/pprof/,
		// as Flux's controllers do.
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr, ExtraHandlers: pprof.GetHandlers()},
		HealthProbeBindAddress:        o.healthAddr,
		LeaderElection:                o.leaderElection.Enable,
		LeaderElectionReleaseOnCancel: o.leaderElection.ReleaseOnCancel,
		LeaseDuration:                 &o.leaderElection.LeaseDuration,
		RenewDeadline:                 &o.leaderElection.RenewDeadline,
		RetryPeriod:                   &o.leaderElection.RetryPeriod,
		LeaderElectionID:              leaderElectionID,
		// In a cluster, the lease is in sluice's own namespace; out of
		// one, in the namespace RUNTIME_NAMESPACE names, as for Flux.
		LeaderElectionNamespace: os.Getenv(helper.EnvRuntimeNamespace),
		// NOTE: a Git host that never answers holds a write until the
		// source's timeout; with one worker, every other repository's
		// adoptions and write-backs would wait behind it.
		Controller: ctrlconfig.Controller{MaxConcurrentReconciles: o.concurrent},
		Client: ctrlclient.Options{Cache: &ctrlclient.CacheOptions{
			// Read Secrets, ConfigMaps (postBuild variables) and
			// GitRepositories only when needed, straight from the API
			// server: no cluster-wide watch, no cached copies of every
			// Secret, and RBAC that only needs get.
			DisableFor: []ctrlclient.Object{&corev1.Secret{}, &corev1.ConfigMap{}, &sourcev1.GitRepository{}},
		}},
		Cache: ctrlcache.Options{
			// Managed fields weigh as much as the rest of a cached object,
			// and sluice reads them only on Deployments, and only its own
			// (whether it applied their replicas): a fleet's Rollouts,
			// Deliveries and Kustomizations are cached without them, its
			// Deployments with sluice's alone.
			DefaultTransform: ctrlcache.TransformStripManagedFields(),
			ByObject: map[ctrlclient.Object]ctrlcache.ByObject{
				&kustomizev1.Kustomization{}: {Label: watchSelector},
				&appsv1.Deployment{}:         {Transform: keepManagedFieldsOf(controllerName)},
			},
		},
		Logger: ctrl.Log,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	probes.SetupChecks(mgr, ctrl.Log.WithName("probes"))

	fluxRecorder, err := events.NewRecorder(ctrl.Log.WithName("events"), o.eventsAddr, controllerName, events.WithManager(mgr))
	if err != nil {
		return fmt.Errorf("creating event recorder: %w", err)
	}
	// Every event carries the revision its Kustomization applied, for
	// notification-controller's commit status providers.
	eventRecorder := controllers.NewRevisionRecorder(fluxRecorder, mgr.GetClient())

	ctx := ctrl.SetupSignalHandler()
	shard := controllers.Shard{Selector: watchSelector, Reader: mgr.GetClient()}
	deliveries := &controllers.DeliveryReconciler{
		Client:         mgr.GetClient(),
		EventRecorder:  eventRecorder,
		APIReader:      mgr.GetAPIReader(),
		Metrics:        helper.NewMetrics(mgr, metrics.MustMakeRecorder(), deliveryv1.DeliveryFinalizer),
		ControllerName: controllerName,
		Shard:          shard,
	}
	if err := deliveries.SetupWithManager(ctx, mgr, controllers.DeliveryReconcilerOptions{
		MaxConcurrentReconciles: o.concurrent,
		RateLimiter:             helper.GetRateLimiter(o.rateLimiter),
	}); err != nil {
		return fmt.Errorf("setting up the Delivery controller: %w", err)
	}

	// One set of working copies serves every controller, so that writes to
	// a repository are serialized.
	if err := gitops.PrivateDir(o.gitDir); err != nil {
		return err
	}
	var gitOptions []gitops.Option
	if o.credentialsOverHTTP {
		gitOptions = append(gitOptions, gitops.WithCredentialsOverHTTP())
	}
	repositories := gitops.NewRepositories(o.gitDir, gitOptions...)
	discovery := &controllers.KustomizationReconciler{
		Client:         mgr.GetClient(),
		EventRecorder:  eventRecorder,
		Git:            repositories,
		ControllerName: controllerName,
	}
	if err := discovery.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Kustomization discovery controller: %w", err)
	}
	writeBack := &controllers.WriteBackReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		EventRecorder:  eventRecorder,
		Git:            repositories,
		ControllerName: controllerName,
		Shard:          shard,
	}
	if err := writeBack.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the write-back controller: %w", err)
	}

	ctrl.Log.Info("starting sluice")
	return mgr.Start(ctx)
}

// setIntervalJitter spreads the requeues at a Delivery's interval over +/-
// the percentage, so that Deliveries adopted together do not all come back
// at once. Without it, Flux's jitter functions return the interval as is.
func setIntervalJitter(o jitter.IntervalOptions) error {
	if err := o.SetGlobalJitter(nil); err != nil {
		return fmt.Errorf("--interval-jitter-percentage: %w", err)
	}
	return nil
}

// keepManagedFieldsOf drops from a cached object the managed fields of
// every field manager but manager.
//
// NOTE: sluice never updates a Deployment it read from the cache (an update
// that sends managed fields replaces them all); it patches, and applies
// what it owns.
func keepManagedFieldsOf(manager string) toolscache.TransformFunc {
	return func(in any) (any, error) {
		obj, err := apimeta.Accessor(in)
		if err != nil {
			// A tombstone of a deleted object: left as it is.
			return in, nil
		}
		fields := obj.GetManagedFields()
		kept := slices.DeleteFunc(slices.Clone(fields), func(mf metav1.ManagedFieldsEntry) bool { return mf.Manager != manager })
		if len(kept) < len(fields) {
			obj.SetManagedFields(slices.Clip(kept))
		}
		return in, nil
	}
}
