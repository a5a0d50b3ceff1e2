package controllers

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	helper "github.com/fluxcd/pkg/runtime/controller"
	"github.com/fluxcd/pkg/runtime/events"
	"github.com/fluxcd/pkg/runtime/metrics"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// k8sClient reads straight from the API server, never from a cache, so that
// tests observe what the reconciler really wrote.
var k8sClient client.Client

// testConfig is the suite's API server, for a test that needs clients of
// its own.
var testConfig *rest.Config

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		// The fuzz targets test pure functions: a control plane per
		// fuzzing worker would only slow them down.
		return m.Run()
	}
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{
			filepath.Join("..", "config", "crd", "bases"),
			filepath.Join("..", "bin", "share", "argo-rollouts", "crds"),
			filepath.Join("..", "bin", "share", "kustomize-controller", "bases"),
		},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	testConfig = cfg
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest (run 'make tools' first): %v\n", err)
		// A start that failed installing the CRDs leaves the control
		// plane running.
		_ = env.Stop()
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}()

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := deliveryv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := rolloutsv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if k8sClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}

	// Logs go nowhere unless SLUICE_TEST_LOG is set.
	logOut := io.Discard
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logOut), zap.UseDevMode(true)))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		panic(err)
	}
	recorder, err := events.NewRecorder(ctrl.Log.WithName("events"), "", "sluice", events.WithManager(mgr))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(ctrl.SetupSignalHandler())
	defer cancel()
	reconciler := &DeliveryReconciler{
		Client:         mgr.GetClient(),
		EventRecorder:  recorder,
		APIReader:      mgr.GetAPIReader(),
		Metrics:        helper.NewMetrics(mgr, metrics.NewRecorder(), deliveryv1.DeliveryFinalizer),
		ControllerName: "sluice",
	}
	if err := reconciler.SetupWithManager(ctx, mgr, DeliveryReconcilerOptions{MaxConcurrentReconciles: 2}); err != nil {
		panic(err)
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			panic(err)
		}
	}()

	return m.Run()
}

// newNamespace creates a namespace for one test and deletes it afterwards.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "sluice-test-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), ns) })
	return ns.Name
}
