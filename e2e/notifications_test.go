package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	eventv1 "github.com/fluxcd/pkg/apis/event/v1"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// webhook is an HTTP server that stands for a generic webhook provider's
// endpoint: it keeps every event notification-controller posts to it.
type webhook struct {
	*httptest.Server
	mu     sync.Mutex
	events []eventv1.Event
}

func startWebhook(t *testing.T) *webhook {
	w := &webhook{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var e eventv1.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.events = append(w.events, e)
		w.mu.Unlock()
	}))
	t.Cleanup(w.Close)
	return w
}

// commitStatus is a commit status a Git host received.
type commitStatus struct {
	State       string `json:"state"`
	Context     string `json:"context"`
	Description string `json:"description"`
}

// giteaHost stands for a Gitea server's commit status API, the part
// notification-controller's gitea Provider uses: it keeps the statuses
// posted for each commit of owner/repo.
type giteaHost struct {
	*httptest.Server
	mu       sync.Mutex
	statuses map[string][]commitStatus
}

func startGiteaHost(t *testing.T, token string) *giteaHost {
	h := &giteaHost{statuses: map[string][]commitStatus{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/version" && r.Header.Get("Authorization") != "token "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		path := strings.TrimPrefix(r.URL.Path, "/api/v1")
		switch {
		case r.Method == http.MethodGet && path == "/version":
			fmt.Fprint(w, `{"version":"1.22.0"}`)
		case r.Method == http.MethodGet && strings.HasPrefix(path, "/repos/owner/repo/commits/"):
			fmt.Fprint(w, `[]`)
		case r.Method == http.MethodPost && strings.HasPrefix(path, "/repos/owner/repo/statuses/"):
			var st commitStatus
			if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			h.mu.Lock()
			sha := strings.TrimPrefix(path, "/repos/owner/repo/statuses/")
			h.statuses[sha] = append(h.statuses[sha], st)
			h.mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"id":1,"status":%q,"context":%q}`, st.State, st.Context)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

// marked waits until commit has a status in state whose description is
// description and whose context (the status's name) starts with name.
func (h *giteaHost) marked(g *WithT, commit, state, description, name string) {
	g.Eventually(func() []commitStatus {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Clone(h.statuses[commit])
	}, time.Minute, 100*time.Millisecond).Should(ContainElement(And(
		HaveField("State", state), HaveField("Description", description), HaveField("Context", HavePrefix(name)))),
		"commit %s has no %s status %q", commit, state, description)
}

// find returns the events about kind namespace/name with reason.
func (w *webhook) find(kind, namespace, name, reason string) []eventv1.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var found []eventv1.Event
	for _, e := range w.events {
		o := e.InvolvedObject
		if o.Kind == kind && o.Namespace == namespace && o.Name == name && e.Reason == reason {
			found = append(found, e)
		}
	}
	return found
}

// received waits for an event about kind namespace/name with reason whose
// message contains every one of messages, and returns it.
func (w *webhook) received(g *WithT, kind, namespace, name, reason string, messages ...string) eventv1.Event {
	var event eventv1.Event
	g.Eventually(func(g Gomega) {
		found := w.find(kind, namespace, name, reason)
		g.Expect(found).NotTo(BeEmpty(), "no %s event about %s %s/%s", reason, kind, namespace, name)
		e := found[len(found)-1]
		for _, m := range messages {
			g.Expect(e.Message).To(ContainSubstring(m))
		}
		event = e
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	return event
}

// applyYAML creates the objects of a YAML document stream.
func applyYAML(t *testing.T, g *WithT, docs string) {
	t.Helper()
	for _, doc := range strings.Split(docs, "\n---\n") {
		obj := &unstructured.Unstructured{}
		g.Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed())
		g.Expect(k8sClient.Create(context.Background(), obj)).To(Succeed(), "creating %s %s", obj.GetKind(), obj.GetName())
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), obj) })
	}
}

// TestNotifications sends sluice's events through Flux's
// notification-controller, to a generic webhook provider an Alert on
// sluice's Delivery kind and on Kustomizations names: the adoption, the
// wait for approval with its promotion branch, the promotion, the rejection
// with its analysis and the opt-out each arrive, with the revision Flux
// applied; through a second Alert, a gitea commit status Provider marks
// each of those commits on a Git host the test runs.
func TestNotifications(t *testing.T) {
	g := NewWithT(t)
	const ns = "bell"

	var failing atomic.Bool
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rate := "1.0"
		if failing.Load() {
			rate = "0.42"
		}
		fmt.Fprintf(w, `{"successRate": %s}`, rate)
	}))
	t.Cleanup(metric.Close)
	hook := startWebhook(t)
	giteaToken := stack.RandomSecret()
	gitea := startGiteaHost(t, giteaToken)
	g.Expect(k8sClient.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "bell-gitea"},
		StringData: map[string]string{"token": giteaToken},
	})).To(Succeed())
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "bell-gitea"}})
	})

	// The Alert names Delivery, a kind Flux's Alert CRD admits only with
	// sluice's Flux component (config/flux) applied.
	applyYAML(t, g, fmt.Sprintf(`apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata:
  name: bell-webhook
  namespace: flux-system
spec:
  type: generic
  address: %s
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata:
  name: bell
  namespace: flux-system
spec:
  providerRef:
    name: bell-webhook
  eventSeverity: info
  eventSources:
    - kind: Delivery
      namespace: %s
      name: '*'
    - kind: Kustomization
      name: %s
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata:
  name: bell-gitea
  namespace: flux-system
spec:
  type: gitea
  address: %s/owner/repo
  secretRef:
    name: bell-gitea
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata:
  name: bell-commit-status
  namespace: flux-system
spec:
  providerRef:
    name: bell-gitea
  eventSources:
    - kind: Delivery
      namespace: %s
      name: '*'
    - kind: Kustomization
      name: %s`, hook.URL, ns, ns, gitea.URL, ns, ns))

	repo := newGitRepo(t, ns)
	policy := strings.ReplaceAll(storePolicy(metric.URL), "namespace: store", "namespace: "+ns)
	repo.write(map[string]string{
		"apps/bell/deployment.yaml": webApp(ns, 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated"),
		"apps/bell/policy.yaml":     policy,
	})
	added := repo.commitAndPush("Add the bell")
	fluxSync(t, ns, env.Git.RepositoryURL(ns), "./apps/bell")
	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}
	// push makes a change on the latest main and pushes it, returning the
	// commit.
	deploymentFile := filepath.Join(repo.dir, "apps/bell/deployment.yaml")
	push := func(message, from, to string) string {
		pushWithRetry(t, repo, message, func() { replaceInFile(t, deploymentFile, from, to) })
		return repo.git("", "rev-parse", "HEAD")
	}

	// Adoption: said on the Kustomization, with the revision that brought
	// the annotated Deployment.
	adopted := hook.received(g, kustomizev1.KustomizationKind, "flux-system", ns, "Adopted", "adopted Deployment bell/web")
	g.Expect(adopted.ReportingController).To(Equal("sluice"))
	g.Expect(adopted.Metadata).To(HaveKeyWithValue(eventv1.MetaRevisionKey, "main@sha1:"+added))
	g.Expect(adopted.Metadata).To(HaveKeyWithValue(eventv1.MetaCommitStatusKey, eventv1.MetaCommitStatusUpdateValue))
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, delivery.DeepCopy()).Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// v2 waits at the gate: the event names the promotion branch to merge
	// and carries the revision that released v2.
	released := push("Release web v2", "registry.example/web:v1", "registry.example/web:v2")
	var candidate string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		candidate = d.Status.CandidateTemplateHash
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	branch := fmt.Sprintf("sluice/promote/%s/web/2-%s", ns, candidate)
	waiting := hook.received(g, deliveryv1.DeliveryKind, ns, "web", deliveryv1.WaitingForApprovalReason,
		"template "+candidate+" waits for approval at step 2", "merge promotion branch "+branch+" into main")
	g.Expect(waiting.Metadata).To(HaveKeyWithValue(eventv1.MetaRevisionKey, "main@sha1:"+released))
	g.Expect(waiting.Metadata).To(HaveKeyWithValue(eventv1.MetaCommitStatusKey, eventv1.MetaCommitStatusUpdateValue))
	g.Expect(waiting.Metadata).To(HaveKey("pushedCommit"))

	// The merge approves it: promoted, with the revision of the merge.
	mergePromotionBranch(t, g, repo, ns, "web", time.Minute)
	merged := repo.git("", "rev-parse", "HEAD")
	promoted := hook.received(g, deliveryv1.DeliveryKind, ns, "web", "Promoted", "promoted template "+candidate)
	g.Expect(promoted.Metadata).To(HaveKeyWithValue(eventv1.MetaRevisionKey, "main@sha1:"+merged))
	g.Expect(promoted.Metadata).To(HaveKeyWithValue(eventv1.MetaCommitStatusKey, eventv1.MetaCommitStatusUpdateValue))
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(candidate))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// v3 fails its analysis: the rejection is an error with the analysis.
	failing.Store(true)
	rejectedRelease := push("Release web v3", "registry.example/web:v2", "registry.example/web:v3")
	rejected := hook.received(g, deliveryv1.DeliveryKind, ns, "web", deliveryv1.RejectedReason, "success-rate")
	g.Expect(rejected.Severity).To(Equal(eventv1.EventSeverityError))
	g.Expect(rejected.Message).To(MatchRegexp(`metric success-rate failed in AnalysisRun web-[0-9a-z]+-3-1`))
	g.Expect(rejected.Metadata).To(HaveKeyWithValue(eventv1.MetaRevisionKey, "main@sha1:"+rejectedRelease))
	t.Logf("rejection: %q", rejected.Message)
	// rollback: revert puts v2 back in Git.
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(candidate))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// Opting out hands the app back: said on the Delivery.
	optOut := push("Stop progressive delivery of the bell",
		"  annotations:\n    sluice.dev/strategy: canary\n    sluice.dev/policy: gated\n", "")
	optedOut := hook.received(g, deliveryv1.DeliveryKind, ns, "web", "OptedOut", "the Delivery leaves Git")
	g.Expect(optedOut.Metadata).To(HaveKeyWithValue(eventv1.MetaRevisionKey, "main@sha1:"+optOut))
	g.Expect(optedOut.Metadata).To(HaveKeyWithValue(eventv1.MetaCommitStatusKey, eventv1.MetaCommitStatusUpdateValue))

	// A commit status provider marks each of those commits: the release
	// that brought a candidate, the merge that approved it, the release
	// that was rejected.
	gitea.marked(g, added, "success", "adopted", "kustomization/bell/")
	gitea.marked(g, released, "success", "waiting for approval", "delivery/web/")
	gitea.marked(g, merged, "success", "promoted", "delivery/web/")
	gitea.marked(g, rejectedRelease, "failure", "rejected", "delivery/web/")
	gitea.marked(g, optOut, "success", "opted out", "delivery/web/")

	// Every event sluice sent through the Alert is sluice's, and carries a
	// revision.
	hook.mu.Lock()
	defer hook.mu.Unlock()
	sent := 0
	for _, e := range hook.events {
		if e.ReportingController != "sluice" {
			continue
		}
		sent++
		t.Logf("%s %s/%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Namespace, e.InvolvedObject.Name, e.Reason, e.Metadata[eventv1.MetaRevisionKey])
		if !strings.HasPrefix(e.Metadata[eventv1.MetaRevisionKey], "main@sha1:") {
			t.Errorf("%s event about %s %s has no revision: %v", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Metadata)
		}
	}
	t.Logf("%d events of sluice and %d of Flux reached the webhook", sent, len(hook.events)-sent)
}
