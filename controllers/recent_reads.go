package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NOTE: sluice reads Secrets straight from the API server rather than
// caching every one of the cluster (see main.go). In a fleet's burst a
// thousand Deliveries of one GitRepository resolve its credentials within
// seconds, and each read would count against sluice's API rate limit,
// which the Delivery controller's reconciles share. GitRepositories are
// read afresh: their artifact revision is compared with what the
// Kustomizations, cached and current, say they attempted and applied.

// recentReads remembers, for ttl (recentReadTTL when zero), the Secrets
// sluice read: a Secret is read at most once in that time, and a change to
// it is seen after it at the latest. Reads that fail are not remembered.
type recentReads struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[client.ObjectKey]recentRead
}

const recentReadTTL = 2 * time.Second

type recentRead struct {
	secret *corev1.Secret
	at     time.Time
}

// reader reads through c, remembering Secrets.
func (r *recentReads) reader(c client.Reader) client.Reader {
	return recentReader{Reader: c, reads: r}
}

type recentReader struct {
	client.Reader
	reads *recentReads
}

func (rr recentReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return rr.Reader.Get(ctx, key, obj, opts...)
	}
	if read, ok := rr.reads.load(key, time.Now()); ok {
		read.DeepCopyInto(secret)
		return nil
	}
	at := time.Now()
	if err := rr.Reader.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	rr.reads.store(key, secret.DeepCopy(), at)
	return nil
}

func (r *recentReads) load(k client.ObjectKey, now time.Time) (*corev1.Secret, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	read, ok := r.m[k]
	if !ok || now.Sub(read.at) >= r.timeToLive() {
		return nil, false
	}
	return read.secret, true
}

func (r *recentReads) store(k client.ObjectKey, secret *corev1.Secret, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[client.ObjectKey]recentRead{}
	}
	// Forget what is too old to be used again.
	for key, read := range r.m {
		if at.Sub(read.at) >= r.timeToLive() {
			delete(r.m, key)
		}
	}
	r.m[k] = recentRead{secret: secret, at: at}
}

func (r *recentReads) timeToLive() time.Duration {
	if r.ttl > 0 {
		return r.ttl
	}
	return recentReadTTL
}
