// Package kubetest holds what the envtest and end-to-end suites both do to
// the API server.
package kubetest

import (
	"context"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Update changes obj with mutate and updates it through c; when a
// controller changed the object in between, it gets the latest version and
// mutates that.
func Update(g Gomega, c client.Client, obj client.Object, mutate func()) {
	ctx := context.Background()
	first := true
	g.Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				return err
			}
		}
		first = false
		mutate()
		return c.Update(ctx, obj)
	})).To(Succeed())
}
