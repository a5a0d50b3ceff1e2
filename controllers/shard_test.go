package controllers

import (
	"context"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// TestShardsSplitTheFleet: instances whose caches hold the Kustomizations
// of disjoint label selectors, as Flux's controllers shard, each own
// exactly the Deliveries their Kustomizations applied; the instance that
// shards nothing away owns those of unlabelled Kustomizations and those no
// Kustomization applied.
func TestShardsSplitTheFleet(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ns := newNamespace(t)
	scheme := runtime.NewScheme()
	g.Expect(kustomizev1.AddToScheme(scheme)).To(Succeed())
	c, err := client.New(testConfig, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	for name, shard := range map[string]string{"apps-one": "one", "apps-two": "two", "apps": ""} {
		ks := &kustomizev1.Kustomization{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Minute}, Path: "./" + name,
				SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet"}},
		}
		if shard != "" {
			ks.Labels = map[string]string{"sharding.fluxcd.io/key": shard}
		}
		g.Expect(c.Create(ctx, ks)).To(Succeed())
	}
	appliedBy := func(ks string) *deliveryv1.Delivery {
		d := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}
		if ks != "" {
			d.Labels = map[string]string{kustomizationNameLabel: ks, kustomizationNamespaceLabel: ns}
		}
		return d
	}
	instance := func(selector string) Shard {
		sel, err := labels.Parse(selector)
		g.Expect(err).NotTo(HaveOccurred())
		kc, err := cache.New(testConfig, cache.Options{Scheme: scheme,
			ByObject: map[client.Object]cache.ByObject{&kustomizev1.Kustomization{}: {Label: sel}}})
		g.Expect(err).NotTo(HaveOccurred())
		go func() { _ = kc.Start(ctx) }()
		g.Expect(kc.WaitForCacheSync(ctx)).To(BeTrue())
		return Shard{Selector: sel, Reader: kc}
	}
	shards := map[string]Shard{
		"one":       instance("sharding.fluxcd.io/key=one"),
		"two":       instance("sharding.fluxcd.io/key=two"),
		"unsharded": instance("!sharding.fluxcd.io/key"),
	}
	for ks, want := range map[string]string{"apps-one": "one", "apps-two": "two", "apps": "unsharded", "": "unsharded", "deleted": ""} {
		for name, shard := range shards {
			g.Eventually(func(g Gomega) {
				owned, err := shard.Owns(ctx, appliedBy(ks))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(owned).To(Equal(name == want), "shard %s, Delivery applied by %q", name, ks)
			}, 5*time.Second).Should(Succeed())
		}
		// One instance that shards nothing owns everything.
		owned, err := (Shard{}).Owns(ctx, appliedBy(ks))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(owned).To(BeTrue())
	}
}
