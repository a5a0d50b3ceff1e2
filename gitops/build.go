package gitops

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	generator "github.com/fluxcd/pkg/kustomize"
	securefs "github.com/fluxcd/pkg/kustomize/filesys"
	"github.com/fluxcd/pkg/sourceignore"
	"github.com/fluxcd/pkg/sourceignore/gitignore"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/api/resource"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/openapi"
	"sigs.k8s.io/kustomize/kyaml/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// Kustomization is what sluice needs of a Flux Kustomization to build its
// path exactly as kustomize-controller does.
type Kustomization struct {
	// Path of the Kustomization in the repository, as in its spec.path.
	Path string
	// Flux is the Kustomization itself: its targetNamespace, name prefix
	// and suffix, patches, components and images are applied on top of
	// the path's kustomization, and its postBuild substitutes variables.
	// Nil builds the path alone.
	Flux *kustomizev1.Kustomization
	// Vars are the postBuild variables, resolved: spec.postBuild.substitute
	// over the ConfigMaps and Secrets of spec.postBuild.substituteFrom.
	Vars map[string]string
	// Ignore is the GitRepository's spec.ignore: files Flux leaves out of
	// the artifact, on top of .sourceignore files.
	Ignore string
}

// name is the Kustomization's namespace/name, for messages.
func (k Kustomization) name() string {
	if k.Flux == nil {
		return "the Kustomization"
	}
	return fmt.Sprintf("Kustomization %s/%s", k.Flux.Namespace, k.Flux.Name)
}

// substitutes tells whether Flux runs postBuild substitution on the build.
func (k Kustomization) substitutes() bool {
	return k.Flux != nil && k.Flux.Spec.PostBuild != nil
}

// ObjectID names an object as a Kustomization builds it.
type ObjectID struct {
	Kind, Namespace, Name string
}

func (id ObjectID) String() string {
	if id.Namespace == "" {
		return id.Kind + "/" + id.Name
	}
	return id.Kind + "/" + id.Namespace + "/" + id.Name
}

// in is id in namespace when id leaves its namespace out: the switched
// objects of a policy are in the Deployment's namespace unless it says.
func (id ObjectID) in(namespace string) ObjectID {
	if id.Namespace == "" {
		id.Namespace = namespace
	}
	return id
}

// matches tells whether id names the object other: same kind and name, and
// the same namespace unless either leaves it to a kustomization (a built
// namespace may come from a kustomization or Flux's targetNamespace).
func (id ObjectID) matches(other ObjectID) bool {
	return id.Kind == other.Kind && id.Name == other.Name &&
		(id.Namespace == "" || other.Namespace == "" || id.Namespace == other.Namespace)
}

// built is an object of a build, with the repository file that defines it.
type built struct {
	// id is the object as Flux applies it: renamed by prefixes and
	// suffixes, in its target namespace.
	id ObjectID
	// file is the repository file that defines it; empty when kustomize
	// cannot tell (a generator).
	file string
	// manifest is the object as Flux applies it, variables substituted,
	// as YAML.
	//
	// NOTE: builds are remembered (see build_memo.go), a fleet's by the
	// hundred, and a batch of edits holds its folders' builds twice: an
	// object held as text weighs a fraction of its parsed nodes. It is
	// parsed again when read, and only the object an edit looks for is.
	manifest string
}

// object returns the object parsed afresh from its manifest: the caller
// may change it.
func (b *built) object() (*yaml.RNode, error) {
	obj, err := yaml.Parse(b.manifest)
	if err != nil {
		return nil, fmt.Errorf("reading %s as built: %w", b.id, err)
	}
	return obj, nil
}

// lookup returns the object's field at fields, nil when it has none.
func (b *built) lookup(fields ...string) (*yaml.RNode, error) {
	obj, err := b.object()
	if err != nil {
		return nil, err
	}
	return obj.Pipe(yaml.Lookup(fields...))
}

// satisfies tells whether holds holds for the object.
func (b *built) satisfies(holds func(*yaml.RNode) bool) (bool, error) {
	obj, err := b.object()
	if err != nil {
		return false, err
	}
	return holds(obj), nil
}

// buildFiles builds the Kustomization's path of the repository at root as
// kustomize-controller does: Flux's generator writes the kustomization (the
// folder's own, or one listing its manifests, with .sourceignore and the
// GitRepository's ignore rules) with the Kustomization's own spec on top,
// kustomize builds it with no load restriction but the repository root, no
// remote bases and no plugins, and postBuild substitutes variables. It
// tells for each object the repository file that defines it, from
// kustomize's origin annotations. The work tree is left as it was: the
// generated kustomization lives in memory.
func buildFiles(root string, k Kustomization, inputs *buildInputs) ([]built, error) {
	dir, err := securePath(root, k.Path)
	if err != nil {
		return nil, err
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("the Kustomization's path %s is not a folder of the repository", k.Path)
	}
	if dir != filepath.Join(root, k.Path) {
		// The path goes through a link: a commit that points the link
		// elsewhere changes no file the build read.
		inputs.markUncacheable()
	}
	if err := inputs.readDir(dir); err != nil {
		return nil, err
	}
	if err := checkScanned(root, dir); err != nil {
		return nil, err
	}
	flux, err := k.unstructured()
	if err != nil {
		return nil, err
	}

	ignored, err := ignoredUnder(root, dir, k.Ignore, inputs)
	if err != nil {
		return nil, err
	}
	manifest, kfile, err := generate(root, dir, ignored, flux)
	if err != nil {
		return nil, fmt.Errorf("generating the kustomization of %s: %w", k.Path, err)
	}
	disk, err := securefs.MakeFsOnDiskSecure(root)
	if err != nil {
		return nil, err
	}
	fs := &recordingFS{FileSystem: securefs.MakeFsInMemory(disk), root: root, inputs: inputs}
	if err := fs.WriteFile(kfile, manifest); err != nil {
		return nil, err
	}
	resMap, err := kustomize(fs, dir)
	if fs.err != nil {
		return nil, fs.err
	}
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", k.Path, err)
	}

	var out []built
	for _, res := range resMap.Resources() {
		if res.GetName() == "" || res.GetKind() == "" || res.GetApiVersion() == "" {
			return nil, fmt.Errorf("building %s: an object without apiVersion, kind or name: %s", k.Path, res.MustYaml())
		}
		b, err := fromResource(root, dir, res)
		if err != nil {
			return nil, err
		}
		if k.substitutes() {
			if err := substitute(flux, k.Flux.Spec.PostBuild.SubstituteStrategy == kustomizev1.SubstituteStrategyAlways, res); err != nil {
				return nil, fmt.Errorf("substituting the variables of %s in %s: %w", b.id, k.Path, err)
			}
			b.id = ObjectID{Kind: res.GetKind(), Namespace: res.GetNamespace(), Name: res.GetName()}
		}
		out = append(out, b)
	}
	return out, nil
}

// kustomizeMu serializes builds: kustomize keeps global state (its OpenAPI
// schema, and maps it does not guard, kubernetes-sigs/kustomize#3659).
var kustomizeMu sync.Mutex

// builtinSchema is the OpenAPI schema version kustomize uses when no
// kustomization names one.
var builtinSchema = openapi.GetSchemaVersion()

// kustomize runs kustomize on dir with the options of Flux's Build: no load
// restriction (the file system stops at the repository), builtin plugins
// only, a panic returned as an error. Flux's Build also resets kustomize's
// global OpenAPI schema to the builtin one before every build and parses
// it again, which is most of a build's time; this resets it only after a
// build whose kustomizations named a schema of their own (the openapi
// field), so every build still starts from the builtin schema alone.
func kustomize(fs filesys.FileSystem, dir string) (_ resmap.ResMap, err error) {
	kustomizeMu.Lock()
	defer kustomizeMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("recovered from kustomize build panic: %v", r)
		}
		if openapi.GetSchemaVersion() != builtinSchema {
			openapi.ResetOpenAPI()
		}
	}()
	k := krusty.MakeKustomizer(&krusty.Options{
		LoadRestrictions: kustypes.LoadRestrictionsNone,
		PluginConfig:     kustypes.DisabledPluginConfig(),
	})
	return k.Run(fs, dir)
}

// checkScanned fails with ErrCannotEdit on a file Flux's generator scans
// below dir (the folders up to those with a kustomization of their own)
// that kustomize-controller would not build: a symbolic link, which
// source-controller leaves out of the artifact and the generator refuses
// to scan when it leads out of the repository, or YAML whose aliases
// expand without bound (see boundedFile).
func checkScanned(root, dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%w: %s is a symbolic link, which Flux leaves out of what it applies; sluice builds only what Flux builds: replace the link with the file, or remove it",
				ErrCannotEdit, relTo(root, p))
		}
		if d.IsDir() {
			for _, name := range konfig.RecognizedKustomizationFileNames() {
				if info, err := os.Lstat(filepath.Join(p, name)); err == nil && !info.IsDir() {
					// Built by kustomize from what it lists, not scanned.
					return filepath.SkipDir
				}
			}
			return nil
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		return boundedFile(root, p, nil)
	})
}

// maxAliasedNodes bounds the YAML nodes the aliases of a document of the
// repository may add when they are expanded.
const maxAliasedNodes = 1 << 18

// boundedFile fails with ErrCannotEdit when the YAML aliases of the file at
// path (its content data, read when nil) add more than maxAliasedNodes
// nodes to a document. kustomize expands aliases without a bound: a few
// lines of anchors (a "billion laughs") would hold sluice's build, and the
// Git writes that wait on it, for good. Every file a build reads is
// checked: those the generator scans, and those kustomize loads.
func boundedFile(root, path string, data []byte) error {
	info, statErr := os.Stat(path)
	if statErr == nil && boundedFiles.holds(path, info) {
		return nil
	}
	if data == nil {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return err
		}
	}
	if bytes.Contains(data, []byte("*")) && !aliasesBounded(data) {
		return fmt.Errorf("%w: %s: its YAML aliases expand to more than %d nodes, which kustomize would build without end: write the values out",
			ErrCannotEdit, relTo(root, path), maxAliasedNodes)
	}
	if statErr == nil {
		boundedFiles.add(path, info)
	}
	return nil
}

// aliasesBounded tells whether no YAML document of data has aliases that
// add more than maxAliasedNodes nodes.
func aliasesBounded(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			// The end, or not YAML that kustomize reads either, which
			// says so.
			return true
		}
		if aliasedNodes(&doc, map[*yaml.Node]int{}) > maxAliasedNodes {
			return false
		}
	}
}

// boundedFiles remembers the files boundedFile passed, by path, size and
// modification time: a build reads again only what a fetch changed.
var boundedFiles = fileMemo{files: map[string]fileStamp{}}

// maxMemoFiles bounds fileMemo: past it, it starts afresh.
const maxMemoFiles = 1 << 17

// fileStamp tells a file's content changed: a checkout that rewrites a
// file changes its modification or change time, or its inode.
type fileStamp struct {
	size, modifiedNs, inode, changedNs int64
}

func stampOf(info os.FileInfo) fileStamp {
	s := fileStamp{size: info.Size(), modifiedNs: info.ModTime().UnixNano()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		s.inode, s.changedNs = int64(st.Ino), st.Ctim.Nano()
	}
	return s
}

type fileMemo struct {
	mu    sync.Mutex
	files map[string]fileStamp
}

func (m *fileMemo) holds(path string, info os.FileInfo) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.files[path]
	return ok && s == stampOf(info)
}

func (m *fileMemo) add(path string, info os.FileInfo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.files) >= maxMemoFiles {
		clear(m.files)
	}
	m.files[path] = stampOf(info)
}

// aliasedNodes counts the nodes the aliases below n stand for, up to just
// above maxAliasedNodes; sizes holds the expanded sizes of the nodes
// aliases name.
func aliasedNodes(n *yaml.Node, sizes map[*yaml.Node]int) int {
	if n.Kind == yaml.AliasNode {
		return expandedSize(n.Alias, sizes)
	}
	count := 0
	for _, c := range n.Content {
		if count += aliasedNodes(c, sizes); count > maxAliasedNodes {
			break
		}
	}
	return count
}

// expandedSize counts the nodes of n with its aliases expanded, up to just
// above maxAliasedNodes.
func expandedSize(n *yaml.Node, sizes map[*yaml.Node]int) int {
	if n == nil {
		return 0
	}
	if size, ok := sizes[n]; ok {
		return size
	}
	// A node that holds an alias of itself expands without end.
	sizes[n] = maxAliasedNodes + 1
	size := 1
	if n.Kind == yaml.AliasNode {
		size = expandedSize(n.Alias, sizes)
	}
	for _, c := range n.Content {
		if size += expandedSize(c, sizes); size > maxAliasedNodes {
			break
		}
	}
	sizes[n] = size
	return size
}

// generate returns the kustomization Flux builds the folder dir with, and
// the file it stands in, with origin annotations asked for.
func generate(root, dir, ignore string, flux unstructured.Unstructured) ([]byte, string, error) {
	manifest, kfile, _, err := generator.NewGeneratorWithIgnore(root, ignore, flux).GenerateManifest(dir)
	if err != nil {
		return nil, "", err
	}
	var kus kustypes.Kustomization
	if err := sigsyaml.Unmarshal(manifest, &kus); err != nil {
		return nil, "", err
	}
	if !slices.Contains(kus.BuildMetadata, kustypes.OriginAnnotations) {
		kus.BuildMetadata = append(kus.BuildMetadata, kustypes.OriginAnnotations)
	}
	manifest, err = sigsyaml.Marshal(kus)
	return manifest, kfile, err
}

// ignoredUnder returns, as ignore rules anchored at dir, the files and
// folders below dir that source-controller leaves out of the artifact of
// the repository at root: those the .sourceignore files and the
// GitRepository's ignore rules name, relative to the repository root, or
// Flux's default exclusions when there are none.
func ignoredUnder(root, dir, ignore string, inputs *buildInputs) (string, error) {
	patterns, err := ignorePatternsOver(root, dir, inputs)
	if err != nil {
		return "", err
	}
	patterns = append(patterns, sourceignore.ReadPatterns(strings.NewReader(ignore), nil)...)
	matcher := sourceignore.NewDefaultMatcher(nil, nil)
	if len(patterns) > 0 {
		matcher = sourceignore.NewMatcher(append(sourceignore.VCSPatterns(nil), patterns...))
	}
	var rules []string
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if !matcher.Match(strings.Split(relTo(root, p), "/"), d.IsDir()) {
			return nil
		}
		rule := "/" + relTo(dir, p)
		if d.IsDir() {
			rules = append(rules, rule+"/")
			return filepath.SkipDir
		}
		rules = append(rules, rule)
		return nil
	})
	return strings.Join(rules, "\n"), err
}

// ignorePatternsOver returns the patterns of the .sourceignore files that
// may name something below dir: those of the folders from the repository
// root down to dir, and those below it. A .sourceignore file's patterns
// apply only below its own folder, so the others of the repository, which
// source-controller reads too, cannot name anything below dir.
func ignorePatternsOver(root, dir string, inputs *buildInputs) ([]gitignore.Pattern, error) {
	rel := relTo(root, dir)
	var domain []string
	if rel != "." {
		domain = strings.Split(rel, "/")
	}
	var patterns []gitignore.Pattern
	for i := range domain {
		file := filepath.Join(root, filepath.Join(domain[:i]...), sourceignore.IgnoreFile)
		inputs.read(file)
		ps, err := sourceignore.ReadIgnoreFile(file, slices.Clone(domain[:i]))
		if err != nil {
			return nil, err
		}
		patterns = append(patterns, ps...)
	}
	below, err := sourceignore.LoadIgnorePatterns(dir, domain)
	if err != nil {
		return nil, err
	}
	return append(patterns, below...), nil
}

// unstructured is the Flux Kustomization as Flux's generator reads it,
// with the resolved variables as its inline substitutions.
func (k Kustomization) unstructured() (unstructured.Unstructured, error) {
	if k.Flux == nil {
		return unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{}}}, nil
	}
	flux := k.Flux.DeepCopy()
	if flux.Spec.PostBuild != nil {
		flux.Spec.PostBuild.Substitute = k.Vars
		flux.Spec.PostBuild.SubstituteFrom = nil
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(flux)
	if err != nil {
		return unstructured.Unstructured{}, err
	}
	return unstructured.Unstructured{Object: obj}, nil
}

// substitute runs Flux's postBuild variable substitution on res with the
// resolved variables, which flux holds as its inline ones, always or only
// when there are variables (a resource marked substitute: disabled is left
// as it is).
func substitute(flux unstructured.Unstructured, always bool, res *resource.Resource) error {
	_, err := generator.SubstituteVariables(context.Background(), nil, flux, res,
		generator.SubstituteWithDryRun(true), generator.SubstituteWithAlways(always))
	return err
}

func fromResource(root, dir string, res *resource.Resource) (built, error) {
	origin, err := res.GetOrigin()
	if err != nil {
		return built{}, err
	}
	manifest, err := res.RNode.String()
	if err != nil {
		return built{}, err
	}
	b := built{
		id:       ObjectID{Kind: res.GetKind(), Namespace: res.GetNamespace(), Name: res.GetName()},
		manifest: manifest,
	}
	if origin != nil && origin.Repo == "" && origin.Path != "" {
		b.file = relTo(root, filepath.Join(dir, origin.Path))
	}
	return b, nil
}

// find returns the object id of the build objs, or nil.
func find(objs []built, id ObjectID) *built {
	for i := range objs {
		if objs[i].id.matches(id) {
			return &objs[i]
		}
	}
	return nil
}

// fileOf returns the repository file that defines id in the build objs, or
// "" when id is not in it or kustomize cannot tell.
func fileOf(objs []built, id ObjectID) string {
	if o := find(objs, id); o != nil {
		return o.file
	}
	return ""
}

func relTo(root, path string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(rel)
}

// substituted tells whether a value holds a ${VAR} that Flux's postBuild
// substitutes.
func substituted(value string) bool {
	return strings.Contains(value, "${")
}
