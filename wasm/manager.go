package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// Filters are the config's filter/wasm entries, in the order they run.
	Filters []config.WasmFilter
	// CacheDir is the on-disk compile cache (STATE/wasm-cache); empty keeps
	// it in memory.
	CacheDir string
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	// Apply installs a complete, validated filter list (e.g.
	// filters.Chain.SetUserFilters). It is called once by NewManager and
	// again after every successful reload, from the watching goroutine. It
	// returns a channel closed once no event is left in the list it
	// replaced: the Manager closes the modules that only that list held
	// then, never under an event in flight. A nil channel means no event
	// can be, and the modules are closed at once.
	Apply func([]filters.Filter) (replacedIdle <-chan struct{})
	// Debounce is how long the directories must stay quiet after a change
	// before a reload (a ConfigMap update is several file system events);
	// 0 means 100ms.
	Debounce time.Duration
}

// Manager loads the configured filters, watches their directories and
// reloads the whole list when a file changes.
type Manager struct {
	opts ManagerOptions
	host *Host
	log  *slog.Logger

	mu      sync.Mutex // serialises reloads and Close
	current []*loaded
	// live holds every module not closed yet: the running list's and
	// those of replaced lists that still have events in flight.
	live   map[*loaded]struct{}
	closed bool
	// afterRead, if set, is called after a scan read a module file (the
	// tests use it to swap a ConfigMap in the middle of a scan).
	afterRead func(path string)

	watcher *fsnotify.Watcher
	cancel  context.CancelFunc
	done    chan struct{}
	// stop ends the goroutines that wait for replaced lists to empty.
	stop     chan struct{}
	retiring sync.WaitGroup
}

// loaded is one module of the running list.
type loaded struct {
	entry int // index in ManagerOptions.Filters
	path  string
	sum   [sha256.Size]byte
	f     *Filter
	// lists counts the lists holding the module that are running or still
	// have events in flight (under Manager.mu); at 0 the module is closed.
	lists int
}

// moduleFile is one module file found by a scan.
type moduleFile struct {
	entry int
	path  string // as the user addresses it (the name of the filter)
	bin   []byte
	sum   [sha256.Size]byte
}

// NewManager loads and validates every module of opts.Filters, calls
// opts.Apply with the full ordered list, and starts watching the filter
// directories (for a file address, its directory: a ConfigMap update swaps
// a symlink, not the file). Any invalid module is an error naming the file
// and what is wrong; nothing is left running then.
func NewManager(ctx context.Context, opts ManagerOptions) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	host, err := NewHost(HostOptions{CacheDir: opts.CacheDir, Log: opts.Log, Metrics: opts.Metrics})
	if err != nil {
		return nil, err
	}
	m := &Manager{opts: opts, host: host, log: opts.Log, live: map[*loaded]struct{}{},
		done: make(chan struct{}), stop: make(chan struct{})}
	files, err := m.scan()
	var first []*loaded
	if err == nil {
		first, err = m.build(ctx, files, nil)
	}
	if err != nil {
		_ = host.Close()
		return nil, err
	}
	// A reload that the watcher starts waits for the first list.
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.watch(); err != nil {
		m.closeList(first)
		_ = host.Close()
		return nil, err
	}
	m.swap(first)
	if len(m.current) > 0 {
		m.log.Info("wasm filters loaded", slog.Any("filters", m.names()))
	}
	return m, nil
}

// Filters returns the running list.
func (m *Manager) Filters() []filters.Filter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.list()
}

func (m *Manager) list() []filters.Filter {
	fs := make([]filters.Filter, len(m.current))
	for i, l := range m.current {
		fs[i] = l.f
	}
	return fs
}

func (m *Manager) names() []string {
	n := make([]string, len(m.current))
	for i, l := range m.current {
		n[i] = l.f.Name()
	}
	return n
}

// Close stops watching and closes every filter once its in-flight calls
// have returned.
func (m *Manager) Close() error {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.stop)
	m.mu.Unlock()
	m.retiring.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watcher != nil {
		_ = m.watcher.Close()
	}
	for l := range m.live {
		_ = l.f.Close()
	}
	m.live = nil
	m.current = nil
	return m.host.Close()
}

// swap makes next the running list: it applies it, and closes the modules
// that only the replaced list held once no event is left in that list.
func (m *Manager) swap(next []*loaded) {
	kept := map[*Filter]bool{}
	names := map[string]bool{}
	for _, l := range next {
		kept[l.f] = true
		names[l.f.Name()] = true
		l.lists++
		m.live[l] = struct{}{}
	}
	old := m.current
	inOld := map[*Filter]bool{}
	for _, l := range old {
		inOld[l.f] = true
		if !kept[l.f] {
			// A replaced module no longer speaks for its name in
			// metrics and /stats; a removed name leaves them.
			l.f.breaker.detach()
			if !names[l.f.Name()] {
				m.opts.Metrics.FilterBreakerOpen.DeleteLabelValues(l.f.Name())
			}
		}
	}
	m.current = next
	var idle <-chan struct{}
	if m.opts.Apply != nil {
		idle = m.opts.Apply(m.list())
	}
	for _, l := range next {
		if !inOld[l.f] {
			// After Apply, which registered the module's /stats object.
			l.f.breaker.attach(m.opts.Metrics.FilterBreakerOpen.WithLabelValues(l.f.Name()),
				m.opts.Metrics.Stats.Register("filter:"+l.f.Name(), "filter", l.f.Name()))
		}
	}
	if len(old) == 0 {
		return
	}
	if idle == nil {
		m.release(old)
		return
	}
	m.retiring.Add(1)
	go func() {
		defer m.retiring.Done()
		select {
		case <-idle:
		case <-m.stop:
			return // Close closes every live module
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.closed {
			m.release(old)
		}
	}()
}

// release drops one list's hold on its modules and closes those no list
// holds any more.
func (m *Manager) release(list []*loaded) {
	for _, l := range list {
		l.lists--
		if l.lists == 0 {
			delete(m.live, l)
			_ = l.f.Close()
		}
	}
}

func (m *Manager) closeList(ls []*loaded) {
	for _, l := range ls {
		_ = l.f.Close()
	}
}

// scanAttempts bounds how often a scan starts again because the kubelet
// removed the ConfigMap version it was reading.
const scanAttempts = 5

// errSwapped says a ConfigMap version went away while a scan read it.
var errSwapped = errors.New("the directory was updated during the scan")

// scan lists every module file of every entry, in run order, and reads
// them. A directory's modules are its files ending in .wasm or .wasm.gz, in
// name order, except names starting with "." (the kubelet's ..data and
// ..2026_... entries).
//
// A directory the kubelet manages (a ConfigMap volume: ..data is a symlink
// to the current ..2026_... directory and each key a symlink through ..data)
// is read from the directory ..data points to, resolved once per scan, so
// that one scan reads one version of the ConfigMap even when the kubelet
// swaps ..data halfway through. If the version is removed under the scan,
// the scan starts again with the new one.
func (m *Manager) scan() ([]moduleFile, error) {
	for attempt := 1; ; attempt++ {
		files, err := m.scanOnce()
		if !errors.Is(err, errSwapped) || attempt == scanAttempts {
			return files, err
		}
		m.log.Debug("filter directory updated during the scan: scanning again", slog.Int("attempt", attempt))
	}
}

func (m *Manager) scanOnce() ([]moduleFile, error) {
	var files []moduleFile
	var errs []error
	versions := map[string]*version{}
	for i, e := range m.opts.Filters {
		fi, err := os.Stat(e.Address)
		if err != nil {
			errs = append(errs, fmt.Errorf("filter entry [%d]: %w", e.Index, err))
			continue
		}
		dir := e.Address
		if !fi.IsDir() {
			dir = filepath.Dir(e.Address)
		}
		v := versions[dir]
		if v == nil {
			v = resolveVersion(dir)
			versions[dir] = v
		}
		// A directory's files are listed and read in the version; a file
		// address is read through its own link.
		var names []string
		src := func(name string) string { return filepath.Join(v.src, name) }
		if fi.IsDir() {
			if names, err = moduleNames(v.src); err != nil {
				if v.swapped() {
					return nil, fmt.Errorf("%s: %w", dir, errSwapped)
				}
				errs = append(errs, fmt.Errorf("filter entry [%d]: %w", e.Index, err))
				continue
			}
		} else {
			names = []string{filepath.Base(e.Address)}
			src = func(string) string { return v.source(e.Address) }
		}
		for _, name := range names {
			p := filepath.Join(dir, name)
			bin, err := readModule(src(name))
			if err != nil {
				if v.swapped() {
					return nil, fmt.Errorf("%s: %w", p, errSwapped)
				}
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				continue
			}
			files = append(files, moduleFile{entry: i, path: p, bin: bin, sum: sha256.Sum256(bin)})
			if m.afterRead != nil {
				m.afterRead(p)
			}
		}
	}
	return files, errors.Join(errs...)
}

// kubeletData is the symlink through which the kubelet swaps a ConfigMap
// volume's contents.
const kubeletData = "..data"

// version is where one scan reads a directory from.
type version struct {
	dir string
	// target is what dir/..data pointed to when the scan resolved it; ""
	// for a directory the kubelet does not manage.
	target string
	// src is the directory to list and read: dir, or the version
	// directory target names.
	src string
}

func resolveVersion(dir string) *version {
	v := &version{dir: dir, src: dir}
	target, err := os.Readlink(filepath.Join(dir, kubeletData))
	if err != nil {
		return v // not a symlink: not a ConfigMap volume
	}
	src := target
	if !filepath.IsAbs(src) {
		src = filepath.Join(dir, src)
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return v
	}
	v.target, v.src = target, src
	return v
}

// source returns the file to read for path, a file of v's directory: for a
// key of a ConfigMap volume (a symlink through ..data), the file in the
// version the scan resolved.
func (v *version) source(path string) string {
	if v.target == "" {
		return path
	}
	link, err := os.Readlink(path)
	if err != nil || !strings.HasPrefix(filepath.Clean(link), kubeletData+string(filepath.Separator)) {
		return path // a file of the user's own beside the kubelet's
	}
	return filepath.Join(v.src, strings.TrimPrefix(filepath.Clean(link), kubeletData+string(filepath.Separator)))
}

// swapped says whether ..data no longer points where the scan resolved it.
func (v *version) swapped() bool {
	if v.target == "" {
		return false
	}
	target, err := os.Readlink(filepath.Join(v.dir, kubeletData))
	return err != nil || target != v.target
}

func isModuleName(name string) bool {
	return !strings.HasPrefix(name, ".") && (strings.HasSuffix(name, ".wasm") || strings.HasSuffix(name, ".wasm.gz"))
}

// moduleNames lists dir's module files.
func moduleNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ent := range ents {
		if !isModuleName(ent.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, ent.Name())) // follows symlinks
		if errors.Is(err, fs.ErrNotExist) {
			continue // a dangling symlink
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			names = append(names, ent.Name())
		}
	}
	return names, nil
}

// build loads files into a list, reusing the modules of old whose entry,
// path and content are unchanged. On error it closes what it loaded and
// leaves old alone.
func (m *Manager) build(ctx context.Context, files []moduleFile, old []*loaded) ([]*loaded, error) {
	var (
		list   []*loaded
		fresh  []*loaded
		errs   []error
		byName = map[string]string{}
		reuse  = map[string]*loaded{}
	)
	for _, l := range old {
		reuse[fmt.Sprintf("%d\x00%s\x00%x", l.entry, l.path, l.sum)] = l
	}
	for _, file := range files {
		name := filepath.Base(file.path)
		if prev, dup := byName[name]; dup {
			// Metrics and /stats name a filter by its file name.
			errs = append(errs, fmt.Errorf("%s: a filter named %s is already loaded from %s: file names must be unique across filter entries", file.path, name, prev))
			continue
		}
		byName[name] = file.path
		if l, ok := reuse[fmt.Sprintf("%d\x00%s\x00%x", file.entry, file.path, file.sum)]; ok {
			list = append(list, l)
			continue
		}
		f, err := m.host.load(ctx, file.path, file.bin, m.opts.Filters[file.entry])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file.path, err))
			continue
		}
		f.breaker.enable(f.log)
		l := &loaded{entry: file.entry, path: file.path, sum: file.sum, f: f}
		fresh = append(fresh, l)
		list = append(list, l)
	}
	if len(errs) > 0 {
		m.closeList(fresh)
		return nil, errors.Join(errs...)
	}
	return list, nil
}

func (m *Manager) watch() error {
	if len(m.opts.Filters) == 0 {
		close(m.done)
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch filter directories: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range m.opts.Filters {
		dir := e.Address
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			dir = filepath.Dir(dir)
		}
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if err := w.Add(dir); err != nil {
			_ = w.Close()
			return fmt.Errorf("watch %s: %w", dir, err)
		}
	}
	m.watcher = w
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.loop(ctx)
	return nil
}

func (m *Manager) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case ev, ok := <-m.watcher.Events:
			if !ok {
				return
			}
			m.log.Debug("filter directory changed", slog.String("path", ev.Name), slog.String("op", ev.Op.String()))
			t.Reset(m.opts.Debounce)
		case err, ok := <-m.watcher.Errors:
			if !ok {
				return
			}
			m.log.Warn("watching filter directories", slog.Any("error", err))
		case <-t.C:
			// Reload logs and counts its own failure; the watcher
			// keeps running either way.
			_ = m.Reload(ctx)
		}
	}
}

// Reload re-scans the filter directories and, if any module changed,
// builds and validates the whole new list, applies it, and closes the
// replaced modules once no event is left in the list they were in (see
// ManagerOptions.Apply). A failed
// reload keeps the running list. The watcher calls it after a change; it
// is exported for tests and signals.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("filter manager closed")
	}
	err := m.reload(ctx)
	if err != nil {
		m.opts.Metrics.FilterReloads.WithLabelValues("failed").Inc()
		m.log.Error("filter reload failed: keeping the running filters", slog.Any("error", err), slog.Any("running", m.names()))
	}
	return err
}

func (m *Manager) reload(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error during reload: %v", r)
		}
	}()
	files, err := m.scan()
	if err != nil {
		return err
	}
	if m.unchanged(files) {
		m.log.Debug("filter directories changed, modules unchanged")
		return nil
	}
	next, err := m.build(ctx, files, m.current)
	if err != nil {
		return err
	}
	m.swap(next)
	m.opts.Metrics.FilterReloads.WithLabelValues("ok").Inc()
	m.log.Info("wasm filters reloaded", slog.Any("filters", m.names()))
	return nil
}

func (m *Manager) unchanged(files []moduleFile) bool {
	if len(files) != len(m.current) {
		return false
	}
	for i, f := range files {
		c := m.current[i]
		if f.entry != c.entry || f.path != c.path || !bytes.Equal(f.sum[:], c.sum[:]) {
			return false
		}
	}
	return true
}
