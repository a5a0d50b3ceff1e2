package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sluice-dev/sluice/e2e/stack"
)

// The fleet: K Kustomizations, each applying its own folder fleet/kNNN of
// one repository, and each folder N annotated Deployments of one replica in
// a namespace of their own. The folders have no kustomization.yaml (Flux
// generates one), so each adoption adds one file and edits one.
const (
	repoName   = "fleet"
	fleetDir   = "fleet"
	appImage   = "registry.example/app:v1"
	shardLabel = "sharding.fluxcd.io/key"
)

// fleet is the shape of the benchmark: how many Kustomizations, how many
// apps each, and how many sluice shards.
type fleet struct {
	kustomizations, appsPerKustomization, shards int
}

func (f fleet) apps() int { return f.kustomizations * f.appsPerKustomization }

// kustomization names the i-th Kustomization and its folder.
func (f fleet) kustomization(i int) string { return fmt.Sprintf("k%03d", i) }

// namespace is the namespace of the i-th Kustomization's apps; prefix tells
// the sluice fleet from the Rollouts Argo runs alone.
func (f fleet) namespace(prefix string, i int) string { return fmt.Sprintf("%s-%03d", prefix, i) }

func (f fleet) app(j int) string { return fmt.Sprintf("app-%03d", j) }

// shard is the shard of the i-th Kustomization, "" with one shard.
func (f fleet) shard(i int) string {
	if f.shards <= 1 {
		return ""
	}
	return fmt.Sprintf("shard%d", i%f.shards+1)
}

// podTemplate is every app's pod template, the same for sluice and for
// Argo alone.
func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: appImage,
		}}},
	}
}

// builtinCanary is the strategy sluice renders for a Delivery without a
// policy: Argo runs it alone with the same steps. A first revision skips
// them.
func builtinCanary() rolloutsv1.RolloutStrategy {
	return rolloutsv1.RolloutStrategy{Canary: &rolloutsv1.CanaryStrategy{Steps: []rolloutsv1.CanaryStep{
		{SetWeight: ptr.To[int32](20)},
		{Pause: &rolloutsv1.RolloutPause{}},
		{SetWeight: ptr.To[int32](50)},
		{Pause: &rolloutsv1.RolloutPause{Duration: ptr.To(intstr.FromString("1m"))}},
	}}}
}

const deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
  annotations:
    sluice.dev/strategy: canary
spec:
  replicas: 1
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
    spec:
      containers:
        - name: app
          image: %[3]s
`

const namespaceYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: %s
`

// files are the repository's files, path → content.
func (f fleet) files() map[string]string {
	files := map[string]string{}
	for i := range f.kustomizations {
		dir := filepath.Join(fleetDir, f.kustomization(i))
		ns := f.namespace("fleet", i)
		files[filepath.Join(dir, "namespace.yaml")] = fmt.Sprintf(namespaceYAML, ns)
		for j := range f.appsPerKustomization {
			files[filepath.Join(dir, f.app(j)+".yaml")] = fmt.Sprintf(deploymentYAML, f.app(j), ns, appImage)
		}
	}
	return files
}

// pushFleet writes the whole fleet into a clone of repoURL in dir as one
// commit, pushes it to main and returns the commit.
func pushFleet(ctx context.Context, f fleet, repoURL, username, password, dir string) (string, error) {
	u, err := url.Parse(repoURL)
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(username, password)
	if _, err := runGit(ctx, "", "clone", "--quiet", u.String(), dir); err != nil {
		return "", err
	}
	for path, content := range f.files() {
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	message := fmt.Sprintf("Deliver %d apps in %d folders as canaries", f.apps(), f.kustomizations)
	for _, args := range [][]string{{"add", "-A"}, {"commit", "--quiet", "-m", message}, {"push", "--quiet", "origin", "HEAD:main"}} {
		if _, err := runGit(ctx, dir, args...); err != nil {
			return "", err
		}
	}
	return runGit(ctx, dir, "rev-parse", "HEAD")
}

// runGit runs git, in dir when given, as the benchmark's author.
func runGit(ctx context.Context, dir string, args ...string) (string, error) {
	return stack.Git(ctx, dir, "Bench", "bench@example.com", args...)
}

// fluxObjects are what `flux create secret git`, `flux create source git`
// and one `flux create kustomization --prune` per folder would create. The
// source is fetched every five minutes: sluice asks Flux to reconcile after
// each push, so nothing waits for an interval. The Kustomizations do not
// wait for health (wait: false): Flux reports them Ready once applied, and
// the benchmark times health itself.
func (f fleet) fluxObjects(repoURL, username, password string) []client.Object {
	ns := stack.FluxNamespace
	objs := []client.Object{
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName + "-auth"},
			StringData: map[string]string{"username": username, "password": password},
		},
		&sourcev1.GitRepository{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName},
			Spec: sourcev1.GitRepositorySpec{
				URL:       repoURL,
				Interval:  metav1.Duration{Duration: 5 * time.Minute},
				Reference: &sourcev1.GitRepositoryRef{Branch: "main"},
				SecretRef: &meta.LocalObjectReference{Name: repoName + "-auth"},
			},
		},
	}
	for i := range f.kustomizations {
		ks := &kustomizev1.Kustomization{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: f.kustomization(i)},
			Spec: kustomizev1.KustomizationSpec{
				Interval:      metav1.Duration{Duration: 10 * time.Minute},
				RetryInterval: &metav1.Duration{Duration: 30 * time.Second},
				Path:          "./" + fleetDir + "/" + f.kustomization(i),
				Prune:         true,
				Wait:          false,
				SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: repoName},
			},
		}
		if shard := f.shard(i); shard != "" {
			ks.Labels = map[string]string{shardLabel: shard}
		}
		objs = append(objs, ks)
	}
	return objs
}
