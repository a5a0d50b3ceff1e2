package controllers

import (
	"context"
	"sync"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NOTE: sluice reads GitRepositories and Secrets straight from the API
// server rather than caching every one of the cluster (see main.go). In a
// fleet's burst a thousand Deliveries of one GitRepository resolve its
// source within seconds, and each read would count against sluice's API
// rate limit, which the Delivery controller's reconciles share.

// recentReads remembers, for ttl (recentReadTTL when zero), the
// GitRepositories and Secrets sluice read: a source is read at most once
// in that time, and a change to it is seen after it at the latest. Reads
// that fail are not remembered.
type recentReads struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[recentKey]recentRead
}

const recentReadTTL = 2 * time.Second

type recentKey struct {
	secret bool
	key    client.ObjectKey
}

type recentRead struct {
	obj client.Object
	at  time.Time
}

// reader reads through c, remembering GitRepositories and Secrets.
func (r *recentReads) reader(c client.Reader) client.Reader {
	return recentReader{Reader: c, reads: r}
}

type recentReader struct {
	client.Reader
	reads *recentReads
}

func (rr recentReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	var k recentKey
	switch obj.(type) {
	case *sourcev1.GitRepository:
		k = recentKey{key: key}
	case *corev1.Secret:
		k = recentKey{secret: true, key: key}
	default:
		return rr.Reader.Get(ctx, key, obj, opts...)
	}
	if read, ok := rr.reads.load(k, time.Now()); ok {
		switch o := obj.(type) {
		case *sourcev1.GitRepository:
			read.(*sourcev1.GitRepository).DeepCopyInto(o)
		case *corev1.Secret:
			read.(*corev1.Secret).DeepCopyInto(o)
		}
		return nil
	}
	at := time.Now()
	if err := rr.Reader.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	rr.reads.store(k, obj.DeepCopyObject().(client.Object), at)
	return nil
}

func (r *recentReads) load(k recentKey, now time.Time) (client.Object, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	read, ok := r.m[k]
	if !ok || now.Sub(read.at) >= r.timeToLive() {
		return nil, false
	}
	return read.obj, true
}

func (r *recentReads) store(k recentKey, obj client.Object, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[recentKey]recentRead{}
	}
	// Forget what is too old to be used again.
	for key, read := range r.m {
		if at.Sub(read.at) >= r.timeToLive() {
			delete(r.m, key)
		}
	}
	r.m[k] = recentRead{obj: obj, at: at}
}

func (r *recentReads) timeToLive() time.Duration {
	if r.ttl > 0 {
		return r.ttl
	}
	return recentReadTTL
}
