package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// countingReader counts the reads that reach the API server.
type countingReader struct {
	client.Reader
	gets int
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets++
	return c.Reader.Get(ctx, key, obj, opts...)
}

// TestDeliveryRead: the Delivery controller reads a Delivery from the cache
// when the cache holds what it last wrote, uses what it wrote while the
// cache still holds the version it wrote over, and reads the API server
// otherwise.
func TestDeliveryRead(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := deliveryv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: "apps", Name: "web"}
	at := func(version string, phase deliveryv1.DeliveryPhase) *deliveryv1.Delivery {
		d := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, ResourceVersion: version}}
		d.Status.Phase = phase
		return d
	}
	for name, tc := range map[string]struct {
		cached  string
		written *writtenDelivery
		want    deliveryv1.DeliveryPhase
		apiGets int
	}{
		"never written":                  {cached: "5", want: "server", apiGets: 1},
		"the cache holds the last write": {cached: "6", written: &writtenDelivery{version: "6"}, want: "cache"},
		"the cache holds the version written over": {cached: "5",
			written: &writtenDelivery{version: "6", over: "5", obj: at("6", "written")}, want: "written"},
		"another writer since": {cached: "7", written: &writtenDelivery{version: "6", over: "5", obj: at("6", "written")},
			want: "server", apiGets: 1},
		"the cache older than the version written over": {cached: "4",
			written: &writtenDelivery{version: "6", over: "5", obj: at("6", "written")}, want: "server", apiGets: 1},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			cache := fake.NewClientBuilder().WithScheme(scheme).WithObjects(at(tc.cached, "cache")).Build()
			api := &countingReader{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(at("8", "server")).Build()}
			r := &DeliveryReconciler{Client: cache, APIReader: api}
			if tc.written != nil {
				r.written.Store(key, *tc.written)
			}
			got, err := r.read(context.Background(), key)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Status.Phase).To(Equal(tc.want))
			g.Expect(api.gets).To(Equal(tc.apiGets))
		})
	}

	// A Delivery gone from the API server is nil, and forgotten.
	g := NewWithT(t)
	empty := fake.NewClientBuilder().WithScheme(scheme).Build()
	r := &DeliveryReconciler{Client: empty, APIReader: empty}
	r.written.Store(key, writtenDelivery{version: "6"})
	got, err := r.read(context.Background(), key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(BeNil())
	_, remembered := r.written.Load(key)
	g.Expect(remembered).To(BeFalse())
}
