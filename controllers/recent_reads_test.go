package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestRecentReads: a Secret read a moment ago is read again from memory
// until the time to live has passed, and then from the API server; one
// that was missing is looked for again at once.
func TestRecentReads(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	const ttl = 500 * time.Millisecond
	reads := &recentReads{ttl: ttl}
	reader := reads.reader(k8sClient)
	key := client.ObjectKey{Namespace: ns, Name: "fleet-auth"}

	err := reader.Get(ctx, key, &corev1.Secret{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name}, StringData: map[string]string{"password": "one"}}
	g.Expect(k8sClient.Create(ctx, secret)).To(Succeed())

	read := func() string {
		s := &corev1.Secret{}
		g.Expect(reader.Get(ctx, key, s)).To(Succeed())
		return string(s.Data["password"])
	}
	start := time.Now()
	g.Expect(read()).To(Equal("one"), "a missing Secret is not remembered")
	secret.StringData = map[string]string{"password": "two"}
	g.Expect(k8sClient.Update(ctx, secret)).To(Succeed())
	if time.Since(start) < ttl/2 {
		g.Expect(read()).To(Equal("one"), "read a moment ago")
	}
	g.Eventually(read, 5*ttl, ttl/10).Should(Equal("two"))

	// What the caller does with its copy does not change what is
	// remembered.
	s := &corev1.Secret{}
	g.Expect(reader.Get(ctx, key, s)).To(Succeed())
	s.Data["password"] = []byte("changed")
	g.Expect(read()).To(Equal("two"))
}
