// Package stack starts and stops sluice's local stack: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok with a fake node, the Argo
// Rollouts controller, Flux's source-controller, kustomize-controller and
// notification-controller, a smart-HTTP Git server and, optionally, sluice
// itself. Every component is a real program built by hack/tools.sh; nothing
// is mocked.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Namespaces the stack's controllers run for.
const (
	FluxNamespace     = "flux-system"
	RolloutsNamespace = "argo-rollouts"
	// NodeName is the kwok node pods are scheduled on; with more nodes,
	// the first of them.
	NodeName = "kwok-node-0"
	// PodsPerNode is how many pods a kwok node holds.
	PodsPerNode = 250
)

// Options say where the stack lives and what it runs.
type Options struct {
	// Dir holds certificates, data, logs and PID files.
	Dir string
	// BinDir holds the binaries and share/ folders hack/tools.sh links.
	BinDir string
	// CRDDir holds sluice's own CRDs.
	CRDDir string
	// InstallDir is sluice's install kustomization (config/default).
	// sluice runs as the ServiceAccount with exactly the RBAC it renders,
	// not as an admin.
	InstallDir string
	// FluxComponentDir is the kustomize Component a user adds to Flux's
	// install (config/flux); notification-controller's CRDs are installed
	// with it. The folder flux beside InstallDir when empty.
	FluxComponentDir string
	// Sluice is the sluice binary; sluice is not started when empty.
	Sluice string
	// SluiceArgs are extra arguments for sluice.
	SluiceArgs []string
	// DeferSluice leaves sluice stopped when the stack starts, for
	// StartSluice or StartSluiceReplica to start later.
	DeferSluice bool
	// KustomizeControllerArgs are extra arguments for kustomize-controller,
	// as a fleet's Flux is tuned (--concurrent).
	KustomizeControllerArgs []string
	// KwokNodes is the number of kwok nodes, of PodsPerNode pods each; one
	// when zero.
	KwokNodes int
	// GitUsername and GitPassword protect the Git server.
	GitUsername, GitPassword string
	// Git, when set, is a running Git server the stack uses instead of
	// starting its own, and leaves running when it stops: a rebuilt
	// cluster reads the repositories the old one wrote.
	Git *GitServer
	// Logf reports progress; nothing is reported when nil.
	Logf func(format string, args ...any)
}

// Stack is a running local stack.
type Stack struct {
	// Dir is the stack's folder.
	Dir string
	// Kubeconfig is the path of an admin kubeconfig.
	Kubeconfig string
	// Config is the admin REST config.
	Config *rest.Config
	// Git is the Git server.
	Git *GitServer
	// SluiceMetricsURL is sluice's Prometheus endpoint, when sluice runs.
	SluiceMetricsURL string
	// EventsURL is notification-controller's event receiver, where sluice
	// and Flux's controllers send their events.
	EventsURL string

	opts    Options
	procs   []*process
	etcdURL string
	// apiServerArgs start kube-apiserver again, the same as before.
	apiServerArgs []string
}

// LogDir is the folder of the components' logs.
func (s *Stack) LogDir() string { return filepath.Join(s.Dir, "logs") }

func (s *Stack) pidDir() string { return filepath.Join(s.Dir, "pids") }

func (s *Stack) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// Start starts every component and waits until each is ready. On error,
// what was started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, retErr error) {
	s := &Stack{Dir: opts.Dir, opts: opts}
	defer func() {
		if retErr != nil {
			s.Stop()
		}
	}()
	for _, d := range []string{s.LogDir(), s.pidDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The components run in their own process groups and outlive a killed
	// owner; StopAbandoned finds them by this file.
	if err := os.WriteFile(filepath.Join(s.Dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	started := time.Now()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"etcd", s.startEtcd},
		{"kube-apiserver", s.startAPIServer},
		{"CRDs and namespaces", s.installCRDs},
		{"kube-controller-manager", s.startControllerManager},
		{"kube-scheduler", s.startScheduler},
		{"kwok", s.startKwok},
		{"rollouts-controller", s.startRollouts},
		{"notification-controller", s.startNotificationController},
		{"source-controller", s.startSourceController},
		{"kustomize-controller", s.startKustomizeController},
		{"git server", s.startGitServer},
		{"sluice", func(ctx context.Context) error {
			if s.opts.DeferSluice {
				return nil
			}
			return s.startSluice(ctx)
		}},
	}
	for _, step := range steps {
		t := time.Now()
		if err := step.run(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
		s.logf("%-24s ready in %s", step.name, time.Since(t).Round(time.Millisecond))
	}
	s.logf("stack ready in %s", time.Since(started).Round(time.Millisecond))
	return s, nil
}

// Stop stops every process the stack started, newest first, and the Git
// server it started.
func (s *Stack) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
		_ = os.Remove(filepath.Join(s.pidDir(), s.procs[i].name+".pid"))
	}
	s.procs = nil
	if s.Git != nil && s.opts.Git == nil {
		_ = s.Git.Close()
	}
}

// StopLeftovers stops the processes a stack in dir left running, by their
// PID files.
func StopLeftovers(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if err := stopPID(f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ownerFile holds the PID of the process that started a stack.
const ownerFile = "owner.pid"

// StopAbandoned stops the components of the stacks in the folders that
// match pattern whose owner process is gone (a test binary killed at its
// timeout, say), and returns those folders. Their logs stay.
func StopAbandoned(pattern string) ([]string, error) {
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	var stopped []string
	var errs []error
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || !errors.Is(syscall.Kill(owner, 0), syscall.ESRCH) {
			continue
		}
		if pids, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid")); len(pids) == 0 {
			continue
		}
		if err := StopLeftovers(dir); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dir, err))
		}
		stopped = append(stopped, dir)
	}
	return stopped, errors.Join(errs...)
}

func (s *Stack) start(name string, args []string, env ...string) (*process, error) {
	bin := filepath.Join(s.opts.BinDir, name)
	if name == "sluice" {
		bin = s.opts.Sluice
	}
	p, err := startProcess(name, bin, args, env, s.LogDir(), s.pidDir())
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	return p, nil
}

func ports(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func (s *Stack) startEtcd(ctx context.Context) error {
	p, err := ports(2)
	if err != nil {
		return err
	}
	client, peer := "http://"+addr(p[0]), "http://"+addr(p[1])
	proc, err := s.start("etcd", []string{
		"--name=default",
		"--data-dir=" + filepath.Join(s.Dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		"--unsafe-no-fsync",
		"--quota-backend-bytes=4294967296",
	})
	if err != nil {
		return err
	}
	s.etcdURL = client
	return waitFor(ctx, proc, time.Minute, "etcd health", httpOK(client+"/health"))
}

func (s *Stack) startAPIServer(ctx context.Context) error {
	pki, err := newPKI(filepath.Join(s.Dir, "pki"))
	if err != nil {
		return err
	}
	p, err := ports(1)
	if err != nil {
		return err
	}
	s.apiServerArgs = []string{
		"--etcd-servers=" + s.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p[0]),
		"--tls-cert-file=" + pki.ServingCert,
		"--tls-private-key-file=" + pki.ServingKey,
		"--client-ca-file=" + pki.CACert,
		"--service-account-key-file=" + pki.SAPub,
		"--service-account-signing-key-file=" + pki.SAKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
	}
	proc, err := s.start("kube-apiserver", s.apiServerArgs)
	if err != nil {
		return err
	}

	s.Kubeconfig = filepath.Join(s.Dir, "kubeconfig")
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["sluice"] = &clientcmdapi.Cluster{Server: "https://" + addr(p[0]), CertificateAuthority: pki.CACert}
	kubeconfig.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: pki.AdminCert, ClientKey: pki.AdminKey}
	kubeconfig.Contexts["sluice"] = &clientcmdapi.Context{Cluster: "sluice", AuthInfo: "admin"}
	kubeconfig.CurrentContext = "sluice"
	if err := clientcmd.WriteToFile(*kubeconfig, s.Kubeconfig); err != nil {
		return err
	}
	if s.Config, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig); err != nil {
		return err
	}
	s.Config.QPS, s.Config.Burst = 100, 200

	return s.waitForAPIServer(ctx, proc)
}

func (s *Stack) waitForAPIServer(ctx context.Context, proc *process) error {
	clientset, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	return waitFor(ctx, proc, 2*time.Minute, "kube-apiserver /readyz", func(ctx context.Context) error {
		return clientset.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	})
}

// RestartAPIServer kills kube-apiserver with SIGKILL and starts it again
// with the same flags, on the same port and etcd, and waits until it is
// ready; the rest of the stack runs on.
func (s *Stack) RestartAPIServer(ctx context.Context) error {
	i := slices.IndexFunc(s.procs, func(p *process) bool { return p.name == "kube-apiserver" })
	if i < 0 {
		return errors.New("kube-apiserver does not run")
	}
	s.procs[i].kill()
	proc, err := startProcess("kube-apiserver", filepath.Join(s.opts.BinDir, "kube-apiserver"), s.apiServerArgs, nil, s.LogDir(), s.pidDir())
	if err != nil {
		return err
	}
	// In its place, so that Stop still stops it after what depends on it.
	s.procs[i] = proc
	return s.waitForAPIServer(ctx, proc)
}

func (s *Stack) startControllerManager(ctx context.Context) error {
	pkiDir := filepath.Join(s.Dir, "pki")
	proc, err := s.start("kube-controller-manager", []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--leader-elect=false",
		"--service-account-private-key-file=" + filepath.Join(pkiDir, "sa.key"),
		"--root-ca-file=" + filepath.Join(pkiDir, "ca.crt"),
		"--use-service-account-credentials=false",
		"--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
		// The API rate of the stack's other clients: at the default 20
		// requests a second, the ReplicaSet controller creating and
		// deleting pods is what a fleet of hundreds of apps waits for.
		"--kube-api-qps=100",
		"--kube-api-burst=200",
	})
	if err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	// The service-account controller creating the default ServiceAccount
	// shows the controllers are running; pods need it to be admitted.
	return waitFor(ctx, proc, 2*time.Minute, "the default ServiceAccount", func(ctx context.Context) error {
		_, err := clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func (s *Stack) startScheduler(ctx context.Context) error {
	p, err := ports(1)
	if err != nil {
		return err
	}
	proc, err := s.start("kube-scheduler", []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p[0]),
		"--leader-elect=false",
	})
	if err != nil {
		return err
	}
	return waitFor(ctx, proc, time.Minute, "kube-scheduler /healthz", httpOK("https://"+addr(p[0])+"/healthz"))
}

func (s *Stack) startKwok(ctx context.Context) error {
	p, err := ports(1)
	if err != nil {
		return err
	}
	stages := filepath.Join(s.opts.BinDir, "share", "kwok", "stage")
	args := []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-lease-duration-seconds=40",
		"--cidr=10.0.0.0/16",
		"--server-address=" + addr(p[0]),
	}
	for _, f := range []string{
		"node/fast/node-initialize.yaml",
		"node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml",
		"pod/fast/pod-complete.yaml",
		"pod/fast/pod-delete.yaml",
	} {
		args = append(args, "--config="+filepath.Join(stages, f))
	}
	proc, err := s.start("kwok", args)
	if err != nil {
		return err
	}

	clientset, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   *resource.NewQuantity(PodsPerNode, resource.DecimalSI),
	}
	names := []string{NodeName}
	for i := 1; i < s.opts.KwokNodes; i++ {
		names = append(names, "kwok-node-"+strconv.Itoa(i))
	}
	for _, name := range names {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels:      map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if _, err := clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return waitFor(ctx, proc, time.Minute, "the kwok nodes to be Ready", func(ctx context.Context) error {
		for _, name := range names {
			n, err := clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
				return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
			}) {
				return fmt.Errorf("node %s not Ready", name)
			}
		}
		return nil
	})
}

func (s *Stack) startRollouts(ctx context.Context) error {
	p, err := ports(2)
	if err != nil {
		return err
	}
	proc, err := s.start("rollouts-controller", []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--leader-elect=false",
		"--healthzPort=" + strconv.Itoa(p[0]),
		"--metricsPort=" + strconv.Itoa(p[1]),
	})
	if err != nil {
		return err
	}
	return waitFor(ctx, proc, time.Minute, "rollouts-controller /healthz", httpOK("http://"+addr(p[0])+"/healthz"))
}

func (s *Stack) startSourceController(ctx context.Context) error {
	p, err := ports(3)
	if err != nil {
		return err
	}
	storage := filepath.Join(s.Dir, "source-storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return err
	}
	proc, err := s.start("source-controller", []string{
		"--health-addr=" + addr(p[0]),
		"--metrics-addr=" + addr(p[1]),
		"--storage-path=" + storage,
		"--storage-addr=" + addr(p[2]),
		"--storage-adv-addr=" + addr(p[2]),
		"--events-addr=" + s.EventsURL,
	}, "KUBECONFIG="+s.Kubeconfig, "RUNTIME_NAMESPACE="+FluxNamespace)
	if err != nil {
		return err
	}
	return waitFor(ctx, proc, time.Minute, "source-controller /readyz", httpOK("http://"+addr(p[0])+"/readyz"))
}

// startNotificationController starts Flux's notification-controller; its
// event receiver is the --events-addr of sluice and Flux's controllers.
func (s *Stack) startNotificationController(ctx context.Context) error {
	p, err := ports(4)
	if err != nil {
		return err
	}
	proc, err := s.start("notification-controller", []string{
		"--health-addr=" + addr(p[0]),
		"--metrics-addr=" + addr(p[1]),
		"--events-addr=" + addr(p[2]),
		"--receiverAddr=" + addr(p[3]),
	}, "KUBECONFIG="+s.Kubeconfig, "RUNTIME_NAMESPACE="+FluxNamespace)
	if err != nil {
		return err
	}
	s.EventsURL = "http://" + addr(p[2]) + "/"
	return waitFor(ctx, proc, time.Minute, "notification-controller /readyz", httpOK("http://"+addr(p[0])+"/readyz"))
}

func (s *Stack) startKustomizeController(ctx context.Context) error {
	p, err := ports(2)
	if err != nil {
		return err
	}
	args := []string{
		"--health-addr=" + addr(p[0]),
		"--metrics-addr=" + addr(p[1]),
		"--events-addr=" + s.EventsURL,
		// A merged approval is a new revision; it must not wait behind the
		// health check of a canary that waits for that very approval.
		"--feature-gates=CancelHealthCheckOnNewRevision=true",
		// A Kustomization whose dependency is not Ready looks again soon,
		// not after the default 30s.
		"--requeue-dependency=2s",
	}
	proc, err := s.start("kustomize-controller", append(args, s.opts.KustomizeControllerArgs...),
		"KUBECONFIG="+s.Kubeconfig, "RUNTIME_NAMESPACE="+FluxNamespace)
	if err != nil {
		return err
	}
	return waitFor(ctx, proc, time.Minute, "kustomize-controller /readyz", httpOK("http://"+addr(p[0])+"/readyz"))
}

func (s *Stack) startGitServer(_ context.Context) error {
	if s.opts.Git != nil {
		s.Git = s.opts.Git
		return nil
	}
	var err error
	s.Git, err = StartGitServer(filepath.Join(s.Dir, "git"), s.opts.GitUsername, s.opts.GitPassword)
	return err
}

func (s *Stack) startSluice(ctx context.Context) error {
	if s.opts.Sluice == "" {
		return nil
	}
	replica, err := s.startSluiceProcess(ctx, "sluice", s.opts.SluiceArgs)
	if err != nil {
		return err
	}
	s.SluiceMetricsURL = replica.MetricsURL
	return nil
}

// startSluiceProcess starts sluice as process name, on ports of its own,
// with args, and waits until it is ready.
func (s *Stack) startSluiceProcess(ctx context.Context, name string, args []string) (*SluiceReplica, error) {
	p, err := ports(2)
	if err != nil {
		return nil, err
	}
	args = append([]string{
		"--health-addr=" + addr(p[0]),
		"--metrics-addr=" + addr(p[1]),
		// The stack's Git server is plain HTTP on loopback.
		"--insecure-credentials-over-http",
		"--events-addr=" + s.EventsURL,
	}, args...)
	kubeconfig, err := s.sluiceKubeconfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("giving sluice its own identity: %w", err)
	}
	// RUNTIME_NAMESPACE is where sluice, out of a cluster, keeps its
	// leader election lease.
	proc, err := startProcess(name, s.opts.Sluice, args, []string{"KUBECONFIG=" + kubeconfig, "RUNTIME_NAMESPACE=" + SluiceNamespace}, s.LogDir(), s.pidDir())
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, proc)
	replica := &SluiceReplica{Name: name, MetricsURL: "http://" + addr(p[1]) + "/metrics", stack: s, proc: proc}
	if err := waitFor(ctx, proc, time.Minute, name+" /readyz", httpOK("http://"+addr(p[0])+"/readyz")); err != nil {
		replica.Stop(true)
		return nil, err
	}
	return replica, nil
}

// SluiceReplica is one more sluice process, beside or instead of the one
// the stack starts.
type SluiceReplica struct {
	// Name names its log file, logs/<Name>.log.
	Name string
	// MetricsURL is its Prometheus endpoint.
	MetricsURL string

	stack *Stack
	proc  *process
}

// StartSluiceReplica starts another sluice process, named name, with the
// identity of the stack's sluice, ports and working copies of its own, and
// args after the stack's SluiceArgs, and waits until it is ready.
func (s *Stack) StartSluiceReplica(ctx context.Context, name string, args ...string) (*SluiceReplica, error) {
	if name == "sluice" {
		return nil, errors.New("the stack's own sluice is started with StartSluice")
	}
	// Its own working copies win over any --git-dir in SluiceArgs.
	args = append(append(slices.Clone(s.opts.SluiceArgs), "--git-dir="+filepath.Join(s.Dir, name+"-git")), args...)
	return s.startSluiceProcess(ctx, name, args)
}

// Stop stops the replica, with SIGTERM or with SIGKILL when kill is set.
func (r *SluiceReplica) Stop(kill bool) {
	if kill {
		r.proc.kill()
	} else {
		r.proc.stop()
	}
	_ = os.Remove(filepath.Join(r.stack.pidDir(), r.Name+".pid"))
	r.stack.procs = slices.DeleteFunc(r.stack.procs, func(p *process) bool { return p == r.proc })
}

// PID is the replica's process ID.
func (r *SluiceReplica) PID() int { return r.proc.cmd.Process.Pid }

// Running tells whether the replica runs.
func (r *SluiceReplica) Running() bool { return r.proc.exited() == nil }

// Leader tells whether the replica holds sluice's leader election lease,
// from its leader_election_master_status metric.
func (r *SluiceReplica) Leader(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.MetricsURL, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `leader_election_master_status{name="sluice-leader-election"}`) {
			return strings.HasSuffix(line, " 1"), nil
		}
	}
	return false, nil
}

// StopSluice stops sluice, with SIGTERM or with SIGKILL when kill is set;
// the rest of the stack runs on.
func (s *Stack) StopSluice(kill bool) {
	for i, p := range s.procs {
		if p.name != "sluice" {
			continue
		}
		if kill {
			p.kill()
		} else {
			p.stop()
		}
		_ = os.Remove(filepath.Join(s.pidDir(), p.name+".pid"))
		s.procs = append(s.procs[:i], s.procs[i+1:]...)
		return
	}
}

// SluicePID is the process ID of the stack's sluice, or 0 when it does not
// run.
func (s *Stack) SluicePID() int {
	return s.Processes()["sluice"]
}

// Processes maps the name of every running component to its process ID.
func (s *Stack) Processes() map[string]int {
	pids := map[string]int{}
	for _, p := range s.procs {
		if p.exited() == nil {
			pids[p.name] = p.cmd.Process.Pid
		}
	}
	return pids
}

// SluiceRunning tells whether sluice runs.
func (s *Stack) SluiceRunning() bool {
	for _, p := range s.procs {
		if p.name == "sluice" && p.exited() == nil {
			return true
		}
	}
	return false
}

// StartSluice starts sluice again after StopSluice and waits until it is
// ready.
func (s *Stack) StartSluice(ctx context.Context) error {
	return s.startSluice(ctx)
}

// Env is a shell-sourceable description of the stack: KUBECONFIG, the Git
// server's base URL, root folder and credentials.
func (s *Stack) Env() string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"KUBECONFIG", s.Kubeconfig},
		{"SLUICE_GIT_URL", s.Git.URL},
		{"SLUICE_GIT_ROOT", s.Git.Root},
		{"SLUICE_GIT_USERNAME", s.Git.Username},
		{"SLUICE_GIT_PASSWORD", s.Git.Password},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return b.String()
}

func shellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
