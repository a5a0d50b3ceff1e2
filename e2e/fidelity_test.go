package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	fluxkustomize "github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// The scenarios of this file run the layouts and Flux constructs of real
// repositories, driven only by git push: sluice must build, edit and run
// exactly what kustomize-controller applies.

// deployment is a Deployment's manifest; replicas and image are written as
// given (a number, or a ${VAR} for Flux's postBuild), namespace and
// annotations are left out when empty.
func deployment(name, namespace, replicas, image string, annotations ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: %s\n", name)
	if namespace != "" {
		fmt.Fprintf(&b, "  namespace: %s\n", namespace)
	}
	if len(annotations) > 0 {
		b.WriteString("  annotations:\n")
		for _, a := range annotations {
			fmt.Fprintf(&b, "    %s\n", a)
		}
	}
	fmt.Fprintf(&b, `spec:
  replicas: %s
  selector:
    matchLabels:
      app: %s
  template:
    metadata:
      labels:
        app: %s
    spec:
      containers:
        - name: %s
          image: %s
`, replicas, name, name, name, image)
	return b.String()
}

func namespace(name string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", name)
}

// fluxSyncCustom is fluxSync of repository name with the GitRepository and
// Kustomization changed by customize before they are created.
func fluxSyncCustom(t *testing.T, name, path string, customize func(*sourcev1.GitRepository, *kustomizev1.Kustomization)) {
	t.Helper()
	fluxCreate(t, k8sClient, name, env.Git.RepositoryURL(name), path, customize)
}

// events returns the messages of the events with reason about the object
// kind namespace/name.
func events(g Gomega, kind, namespace, name, reason string) []string {
	var list corev1.EventList
	g.Expect(k8sClient.List(context.Background(), &list, client.InNamespace(namespace))).To(Succeed())
	var msgs []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason {
			msgs = append(msgs, e.Message)
		}
	}
	return msgs
}

// remoteHeads lists the repository's branches and their commits.
func remoteHeads(repo *gitRepo) string {
	return repo.git("", "ls-remote", "--heads", "origin")
}

// waitHealthy waits for the Delivery to be Healthy with its Rollout
// serving replicas, and its stable template recorded in Git and applied:
// sluice has nothing more to push for it.
func waitHealthy(g *WithT, ns, name string, replicas int32) *deliveryv1.Delivery {
	var d *deliveryv1.Delivery
	g.Eventually(func(g Gomega) {
		d = getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(d.Status.StableTemplateHash))
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		g.Expect(r.Status.AvailableReplicas).To(Equal(replicas))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	return d
}

// TestOverlayWithSiblingFile is an ordinary production overlay: it takes
// one app as a folder and another as a single file of a sibling folder,
// which kustomize-controller builds with no load restriction but the
// repository. Both are adopted; the single file's Delivery is listed where
// the file is, and a release of it reaches its gate.
func TestOverlayWithSiblingFile(t *testing.T) {
	g := NewWithT(t)
	repo := newGitRepo(t, "fleet")
	repo.write(map[string]string{
		"apps/base/web/kustomization.yaml": "resources:\n  - deployment.yaml\n",
		"apps/base/web/deployment.yaml":    deployment("web", "", "2", "registry.example/web:v1", "sluice.dev/strategy: canary"),
		"apps/base/worker/deployment.yaml": deployment("worker", "", "2", "registry.example/worker:v1", "sluice.dev/strategy: canary"),
		"apps/prod/namespace.yaml":         namespace("fleet"),
		"apps/prod/kustomization.yaml":     "namespace: fleet\nresources:\n  - namespace.yaml\n  - ../base/web\n  - ../base/worker/deployment.yaml\n",
	})
	user := repo.commitAndPush("Add the fleet's production overlay")
	fluxSync(t, "fleet", env.Git.RepositoryURL("fleet"), "./apps/prod")

	waitHealthy(g, "fleet", "web", 2)
	waitHealthy(g, "fleet", "worker", 2)
	repo.git("", "pull", "--quiet", "origin", "main")
	// Both adoptions of the revision are one commit.
	g.Expect(repo.git("", "log", "--format=%B", user+"..HEAD")).To(And(
		ContainSubstring("Adopt Deployment fleet/worker for canary delivery"), ContainSubstring("Adopt Deployment fleet/web for canary delivery")))
	g.Expect(strings.Fields(repo.git("", "log", "--format=%H", "--grep=^Sluice-Action: adopt", user+"..HEAD"))).To(HaveLen(1))
	g.Expect(readFile(t, repo, "apps/prod/kustomization.yaml")).To(ContainSubstring("  - ../base/worker/worker-delivery.yaml\n"))
	g.Expect(readFile(t, repo, "apps/base/worker/worker-delivery.yaml")).To(ContainSubstring("kind: Delivery"))
	g.Expect(events(g, "Deployment", "fleet", "worker", "AdoptionFailed")).To(BeEmpty())

	// A person's commit that takes both Deployments' zeros away is
	// answered by one commit that parks both again: the Kustomization's
	// revision is checked once for all its Deliveries.
	parked := "  replicas: 0 # sluice: the Rollout serves this app; its replicas are in the Delivery\n"
	for _, app := range []string{"web", "worker"} {
		replaceInFile(t, filepath.Join(repo.dir, "apps/base", app, "deployment.yaml"), parked, "")
	}
	unparked := repo.commitAndPush("Take the zeros out")
	g.Eventually(func() string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "--format=%an", unparked+"..HEAD")
	}, time.Minute, 200*time.Millisecond).ShouldNot(BeEmpty())
	g.Consistently(func() string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "--format=%an: %s", unparked+"..HEAD")
	}, 3*time.Second, 500*time.Millisecond).Should(Equal("sluice: Record 2 changes"))
	g.Expect(repo.git("", "log", "-1", "--format=%B")).To(And(
		ContainSubstring("Park Deployment fleet/web for sluice"), ContainSubstring("Park Deployment fleet/worker for sluice")))
	for _, app := range []string{"web", "worker"} {
		g.Expect(readFile(t, repo, filepath.Join("apps/base", app, "deployment.yaml"))).To(ContainSubstring(parked))
	}

	// A release of the single file runs as a canary to its manual gate.
	replaceInFile(t, filepath.Join(repo.dir, "apps/base/worker/deployment.yaml"), "worker:v1", "worker:v2")
	repo.commitAndPush("Release worker v2")
	g.Eventually(func(g Gomega) {
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "worker"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.PendingPromotionBranch).NotTo(BeEmpty())
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "worker"}})
		g.Expect(r.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/worker:v2"))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
}

// TestFluxPatchesAndImages: a Kustomization whose spec.patches sets the
// Deployment's replicas is not adopted with the file's count; sluice names
// the file, the line and the patch, and pushes nothing. One whose
// spec.images sets the tag is adopted, and the Rollout runs the tag Flux
// applies.
func TestFluxPatchesAndImages(t *testing.T) {
	g := NewWithT(t)
	repo := newGitRepo(t, "tuned")
	repo.write(map[string]string{
		"apps/api/namespace.yaml":  namespace("tuned-api"),
		"apps/api/deployment.yaml": deployment("api", "tuned-api", "2", "registry.example/api:v1", "sluice.dev/strategy: canary"),
		"apps/web/namespace.yaml":  namespace("tuned-web"),
		"apps/web/deployment.yaml": deployment("web", "tuned-web", "2", "registry.example/web:v1", "sluice.dev/strategy: canary"),
	})
	user := repo.commitAndPush("Add api and web")
	fluxSyncCustom(t, "tuned", "./apps/api", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
		ks.Spec.Patches = []fluxkustomize.Patch{{
			Target: &fluxkustomize.Selector{Kind: "Deployment", Name: "api"},
			Patch:  "- op: replace\n  path: /spec/replicas\n  value: 3\n",
		}}
	})
	fluxCreate(t, k8sClient, "tuned-web", env.Git.RepositoryURL("tuned"), "./apps/web", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
		ks.Spec.Images = []fluxkustomize.Image{{Name: "registry.example/web", NewTag: "v2"}}
	})

	// web: adopted, the Rollout runs what Flux applies.
	waitHealthy(g, "tuned-web", "web", 2)
	r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "tuned-web", Name: "web"}})
	g.Expect(r.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/web:v2"))

	// api: refused, saying where and what; Flux keeps 3 replicas.
	var refusal []string
	g.Eventually(func(g Gomega) []string {
		refusal = events(g, "Deployment", "tuned-api", "api", "AdoptionFailed")
		return refusal
	}, 2*time.Minute, 200*time.Millisecond).ShouldNot(BeEmpty())
	g.Expect(refusal[0]).To(And(ContainSubstring("apps/api/deployment.yaml:9:"),
		ContainSubstring("spec.patches of Kustomization flux-system/tuned"), ContainSubstring("replicas: 3")))
	g.Eventually(func(g Gomega) []string {
		return events(g, "Kustomization", "flux-system", "tuned", "AdoptionFailed")
	}, 30*time.Second, 200*time.Millisecond).ShouldNot(BeEmpty())
	g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "tuned-api", Name: "api"}}).Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
	// Nothing of api's reached Git: web's commits only.
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "--format=%s", user+"..HEAD")).NotTo(ContainSubstring("tuned-api/api"))
	g.Expect(repo.git("", "show", "HEAD:apps/api/deployment.yaml") + "\n").To(Equal(deployment("api", "tuned-api", "2", "registry.example/api:v1", "sluice.dev/strategy: canary")))
}

// TestNamePrefixAndComponents: a Kustomization that prefixes every name,
// and one whose component opts the Deployment in, are adopted: the
// Delivery is named as Flux renames it and refers to the renamed
// Deployment.
func TestNamePrefixAndComponents(t *testing.T) {
	g := NewWithT(t)
	repo := newGitRepo(t, "renamed")
	repo.write(map[string]string{
		"apps/web/kustomization.yaml": "resources:\n  - deployment.yaml\n",
		"apps/web/deployment.yaml":    deployment("web", "renamed", "2", "registry.example/web:v1", "sluice.dev/strategy: canary"),
		"apps/api/kustomization.yaml": "resources:\n  - deployment.yaml\n",
		"apps/api/deployment.yaml":    deployment("api", "renamed", "2", "registry.example/api:v1"),
		"components/canary/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
  - target:
      kind: Deployment
    patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: any
        annotations:
          sluice.dev/strategy: canary
`,
	})
	repo.commitAndPush("Add web and api")
	createNamespace(t, "renamed")
	fluxSyncCustom(t, "renamed", "./apps/web", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
		ks.Spec.NamePrefix = "eu-"
	})
	fluxCreate(t, k8sClient, "renamed-api", env.Git.RepositoryURL("renamed"), "./apps/api", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
		ks.Spec.Components = []string{"../../components/canary"}
	})

	d := waitHealthy(g, "renamed", "eu-web", 2)
	g.Expect(d.Spec.DeploymentRef.Name).To(Equal("eu-web"))
	waitHealthy(g, "renamed", "api", 2)
	repo.git("", "pull", "--quiet", "origin", "main")
	delivery := readFile(t, repo, "apps/web/web-delivery.yaml")
	g.Expect(delivery).To(And(ContainSubstring("  name: web\n"), ContainSubstring("  deploymentRef:\n    name: eu-web\n")))
	g.Expect(readFile(t, repo, "apps/api/kustomization.yaml")).To(ContainSubstring("  - api-delivery.yaml\n"))
}

// TestPostBuildSubstitution: Flux substitutes variables after the build.
// An image that is a variable is adopted and run as substituted, and the
// Delivery is kept from substitution; replicas that are a variable are not
// written over: sluice names the line and pushes nothing for that app.
func TestPostBuildSubstitution(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	repo := newGitRepo(t, "vars")
	repo.write(map[string]string{
		"apps/vars/namespace.yaml": namespace("vars"),
		"apps/vars/web.yaml":       deployment("web", "vars", "2", "registry.example/web:${TAG}", "sluice.dev/strategy: canary"),
		"apps/vars/api.yaml":       deployment("api", "vars", "${API_REPLICAS}", "registry.example/api:v1", "sluice.dev/strategy: canary"),
	})
	user := repo.commitAndPush("Add web and api, with variables")
	g.Expect(k8sClient.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "vars-cluster"},
		Data:       map[string]string{"TAG": "v7"},
	})).To(Succeed())
	fluxSyncCustom(t, "vars", "./apps/vars", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
		ks.Spec.PostBuild = &kustomizev1.PostBuild{
			Substitute:     map[string]string{"API_REPLICAS": "3"},
			SubstituteFrom: []kustomizev1.SubstituteReference{{Kind: "ConfigMap", Name: "vars-cluster"}},
		}
	})

	waitHealthy(g, "vars", "web", 2)
	r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "vars", Name: "web"}})
	g.Expect(r.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/web:v7"))
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(readFile(t, repo, "apps/vars/web.yaml")).To(ContainSubstring("image: registry.example/web:${TAG}"))
	g.Expect(readFile(t, repo, "apps/vars/web-delivery.yaml")).To(ContainSubstring("kustomize.toolkit.fluxcd.io/substitute: disabled"))

	var refusal []string
	g.Eventually(func(g Gomega) []string {
		refusal = events(g, "Deployment", "vars", "api", "AdoptionFailed")
		return refusal
	}, time.Minute, 200*time.Millisecond).ShouldNot(BeEmpty())
	g.Expect(refusal[0]).To(And(ContainSubstring("apps/vars/api.yaml:9:"), ContainSubstring(`"${API_REPLICAS}"`),
		ContainSubstring("postBuild of Kustomization flux-system/vars")))
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "--format=%s", user+"..HEAD")).NotTo(ContainSubstring("vars/api"))
	g.Expect(readFile(t, repo, "apps/vars/api.yaml")).To(ContainSubstring("replicas: ${API_REPLICAS}"))
	g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "vars", Name: "api"}}).Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
}

// TestPinnedSource: a GitRepository that follows a tag has no branch sluice
// may push to. The Deployment is not adopted, the Kustomization and the
// Deployment say why, and no branch of the repository moves.
func TestPinnedSource(t *testing.T) {
	g := NewWithT(t)
	repo := newGitRepo(t, "pinned")
	repo.write(map[string]string{"apps/pinned/app.yaml": webApp("pinned", 2, "registry.example/web:v1", "sluice.dev/strategy: canary")})
	repo.commitAndPush("Add web")
	repo.git("", "tag", "v1.0.0")
	repo.git("", "push", "--quiet", "origin", "v1.0.0")
	before := repo.git("", "ls-remote", "origin")
	fluxSyncCustom(t, "pinned", "./apps/pinned", func(src *sourcev1.GitRepository, _ *kustomizev1.Kustomization) {
		src.Spec.Reference = &sourcev1.GitRepositoryRef{Tag: "v1.0.0"}
	})

	g.Eventually(func(g Gomega) []string {
		return events(g, "Kustomization", "flux-system", "pinned", deliveryv1.GitSourceNotWritableReason)
	}, 2*time.Minute, 200*time.Millisecond).Should(ContainElement(ContainSubstring(
		"GitRepository flux-system/pinned is pinned to tag v1.0.0; sluice cannot write to a source pinned to a tag or commit")))
	g.Expect(events(g, "Deployment", "pinned", "web", "AdoptionFailed")).To(ContainElement(ContainSubstring("pinned to tag v1.0.0")))
	g.Expect(repo.git("", "ls-remote", "origin")).To(Equal(before))
	g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "pinned", Name: "web"}}).Spec.Replicas).To(HaveValue(BeEquivalentTo(2)))
}

// TestSuspendedKustomization: sluice finds a Deployment to adopt in a
// Kustomization that `flux suspend` suspended. It says it waits, pushes
// nothing and requests nothing of Flux; `flux resume` lets the adoption
// through.
func TestSuspendedKustomization(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	repo := newGitRepo(t, "paused")

	// sluice is down while Flux applies the annotated Deployment, and the
	// Kustomization is suspended before sluice comes back.
	env.StopSluice(false)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			if err := env.StartSluice(context.Background()); err != nil {
				t.Errorf("starting sluice again: %v", err)
			}
		}
	})
	repo.write(map[string]string{"apps/paused/app.yaml": webApp("paused", 2, "registry.example/web:v1", "sluice.dev/strategy: canary")})
	user := repo.commitAndPush("Add web")
	fluxSync(t, "paused", env.Git.RepositoryURL("paused"), "./apps/paused")
	ks := &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "paused"}}
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, ks.DeepCopy()).Status.LastAppliedRevision).NotTo(BeEmpty())
		g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "paused", Name: "web"}}).Status.AvailableReplicas).To(BeEquivalentTo(2))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	suspend := func(suspended bool) {
		k := getObj(g, ks.DeepCopy())
		update(g, k, func() { k.Spec.Suspend = suspended })
	}
	suspend(true)
	requested := getObj(g, ks.DeepCopy()).Annotations[meta.ReconcileRequestAnnotation]
	g.Expect(env.StartSluice(ctx)).To(Succeed())
	stopped = false

	g.Eventually(func(g Gomega) []string {
		return events(g, "Kustomization", "flux-system", "paused", "SourceSuspended")
	}, time.Minute, 200*time.Millisecond).Should(ContainElement(ContainSubstring("Kustomization flux-system/paused is suspended")))
	g.Expect(repo.git("", "ls-remote", "origin", "refs/heads/main")).To(HavePrefix(user))
	g.Expect(getObj(g, ks.DeepCopy()).Annotations[meta.ReconcileRequestAnnotation]).To(Equal(requested))

	suspend(false)
	g.Eventually(func(g Gomega) string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "--format=%s", user+"..HEAD")
	}, time.Minute, 200*time.Millisecond).Should(ContainSubstring("Adopt Deployment paused/web for canary delivery"))
	waitHealthy(g, "paused", "web", 2)
}

// TestMaxUnavailableZero: a Deployment that must never run fewer available
// pods than its replicas (maxUnavailable: 0) keeps that through its
// adoption, a canary release and its promotion, sampled every 100 ms. Its
// pods count as available 2 s after they are ready (minReadySeconds), as
// real pods take a while: a stable pod taken away before its replacement
// is available shows as a gap.
func TestMaxUnavailableZero(t *testing.T) {
	g := NewWithT(t)
	repo := newGitRepo(t, "steady")
	app := strings.Replace(webApp("steady", 4, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: steady"),
		"spec:\n  replicas: 4\n", "spec:\n  replicas: 4\n  minReadySeconds: 2\n  strategy:\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n", 1)
	repo.write(map[string]string{
		"apps/steady/app.yaml": app,
		"apps/steady/policy.yaml": `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: steady
  namespace: steady
spec:
  canary:
    steps:
      - setWeight: 25
      - pause: {duration: 2s}
      - setWeight: 75
      - pause: {duration: 2s}
`,
	})
	user := repo.commitAndPush("Add web")
	fluxSync(t, "steady", env.Git.RepositoryURL("steady"), "./apps/steady")
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "steady", Name: "web"}}).Status.AvailableReplicas).To(BeEquivalentTo(4))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	watch := watchAvailability("steady", nil)

	first := waitHealthy(g, "steady", "web", 4)
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/steady/app.yaml"), "web:v1", "web:v2")
	repo.commitAndPush("Release v2")
	g.Eventually(func(g Gomega) {
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "steady", Name: "web"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).NotTo(Equal(first.Status.StableTemplateHash))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(d.Status.StableTemplateHash))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	minAvailable, samples, _ := watch.finish()
	t.Logf("available replicas never below %d over %d samples", minAvailable, samples)
	g.Expect(samples).To(BeNumerically(">", 50))
	g.Expect(minAvailable).To(BeNumerically(">=", 4))
	r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "steady", Name: "web"}})
	g.Expect(r.Spec.Strategy.Canary.MaxUnavailable.IntValue()).To(Equal(0))
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "--format=%s", user+"..HEAD")).To(ContainSubstring("Promote steady/web"))
}

// httpRoute is an HTTPRoute that sends traffic to a stable and a canary
// Service.
func httpRoute(name, namespace string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: %s
  namespace: %s
spec:
  parentRefs:
    - name: edge
  rules:
    - backendRefs:
        - name: web-stable
          port: 80
          weight: 100
        - name: web-canary
          port: 80
          weight: 0
`, name, namespace)
}

// TestGatewayWeightsSurviveFlux: the HTTPRoute whose weights Argo Rollouts'
// Gateway API plugin sets is marked for Flux by the adoption, so that a
// Flux reconcile in the middle of a canary leaves the plugin's weights
// alone. A route sluice does not mark shows what Flux would do otherwise.
func TestGatewayWeightsSurviveFlux(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	repo := newGitRepo(t, "routed")
	service := func(name string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: routed\nspec:\n  selector:\n    app: web\n  ports:\n    - port: 80\n", name)
	}
	repo.write(map[string]string{
		"apps/routed/app.yaml": webApp("routed", 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: routed"),
		"apps/routed/services.yaml": service("web-stable") + "---\n" + service("web-canary") + "---\n" +
			httpRoute("web", "routed") + "---\n" + httpRoute("unrelated", "routed"),
		"apps/routed/policy.yaml": `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: routed
  namespace: routed
spec:
  canary:
    steps:
      - setWeight: 30
      - pause: {}
    trafficRouting:
      gatewayAPI:
        httpRoute: web
        stableService: web-stable
        canaryService: web-canary
`,
	})
	user := repo.commitAndPush("Add web behind a Gateway API route")
	// The stack has no Gateway API plugin, so the canary never becomes
	// healthy: Flux does not wait for it here.
	fluxSyncCustom(t, "routed", "./apps/routed", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) { ks.Spec.Wait = false })

	// The adoption commit marks the route and the Services the plugin
	// writes to, and Flux applies it.
	g.Eventually(func(g Gomega) {
		repo.git("", "pull", "--quiet", "origin", "main")
		g.Expect(repo.git("", "log", "--format=%s", user+"..HEAD")).To(ContainSubstring("Adopt Deployment routed/web"))
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "routed"}})
		g.Expect(ks.Status.LastAppliedRevision).To(HaveSuffix(repo.git("", "rev-parse", "HEAD")))
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed())
	services := readFile(t, repo, "apps/routed/services.yaml")
	g.Expect(strings.Count(services, "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent")).To(Equal(3), services)

	// Weights as the plugin writes them: an update with its own field
	// manager, in the middle of a canary.
	setWeights := func(name string, stable, canary int64) {
		route := &unstructured.Unstructured{}
		route.SetGroupVersionKind(schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"})
		g.Eventually(func() error {
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "routed", Name: name}, route); err != nil {
				return err
			}
			rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
			refs := rules[0].(map[string]any)["backendRefs"].([]any)
			refs[0].(map[string]any)["weight"], refs[1].(map[string]any)["weight"] = stable, canary
			_ = unstructured.SetNestedSlice(route.Object, rules, "spec", "rules")
			return k8sClient.Update(ctx, route, client.FieldOwner("gatewayapi-plugin"))
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	}
	weights := func(g Gomega, name string) []int64 {
		route := &unstructured.Unstructured{}
		route.SetGroupVersionKind(schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"})
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "routed", Name: name}, route)).To(Succeed())
		rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
		var out []int64
		for _, ref := range rules[0].(map[string]any)["backendRefs"].([]any) {
			out = append(out, ref.(map[string]any)["weight"].(int64))
		}
		return out
	}
	setWeights("web", 70, 30)
	setWeights("unrelated", 70, 30)

	// As `flux reconcile ks routed --with-source`: Flux applies the same
	// revision again.
	ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "routed"}})
	requested := time.Now().Format(time.RFC3339Nano)
	update(g, ks, func() {
		if ks.Annotations == nil {
			ks.Annotations = map[string]string{}
		}
		ks.Annotations[meta.ReconcileRequestAnnotation] = requested
	})
	g.Eventually(func(g Gomega) {
		got := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "routed"}})
		g.Expect(got.Status.LastHandledReconcileAt).To(Equal(requested))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	g.Expect(weights(g, "web")).To(Equal([]int64{70, 30}), "Flux reset the weights the plugin set")
	g.Eventually(func(g Gomega) []int64 { return weights(g, "unrelated") }, 10*time.Second, 100*time.Millisecond).
		Should(Equal([]int64{100, 0}), "Flux applies an unmarked route from Git")
}
