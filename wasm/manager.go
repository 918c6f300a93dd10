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
	// again after every successful reload, from the watching goroutine.
	Apply func([]filters.Filter)
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
	closed  bool

	watcher *fsnotify.Watcher
	cancel  context.CancelFunc
	done    chan struct{}
}

// loaded is one module of the running list.
type loaded struct {
	entry int // index in ManagerOptions.Filters
	path  string
	sum   [sha256.Size]byte
	f     *Filter
}

// moduleFile is one module file found by a scan.
type moduleFile struct {
	entry int
	path  string
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
	m := &Manager{opts: opts, host: host, log: opts.Log, done: make(chan struct{})}
	files, err := m.scan()
	if err == nil {
		m.current, err = m.build(ctx, files, nil)
	}
	if err != nil {
		_ = host.Close()
		return nil, err
	}
	if err := m.watch(); err != nil {
		m.closeList(m.current)
		_ = host.Close()
		return nil, err
	}
	if opts.Apply != nil {
		opts.Apply(m.list())
	}
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
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.watcher != nil {
		_ = m.watcher.Close()
	}
	m.closeList(m.current)
	m.current = nil
	return m.host.Close()
}

func (m *Manager) closeList(ls []*loaded) {
	for _, l := range ls {
		_ = l.f.Close()
	}
}

// scan lists every module file of every entry, in run order, and reads
// them. A directory's modules are its files ending in .wasm or .wasm.gz, in
// name order, except names starting with "." (the kubelet's ..data and
// ..2026_... entries).
func (m *Manager) scan() ([]moduleFile, error) {
	var files []moduleFile
	var errs []error
	for i, e := range m.opts.Filters {
		fi, err := os.Stat(e.Address)
		if err != nil {
			errs = append(errs, fmt.Errorf("filter entry [%d]: %w", e.Index, err))
			continue
		}
		paths := []string{e.Address}
		if fi.IsDir() {
			if paths, err = moduleFiles(e.Address); err != nil {
				errs = append(errs, fmt.Errorf("filter entry [%d]: %w", e.Index, err))
				continue
			}
		}
		for _, p := range paths {
			bin, err := readModule(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				continue
			}
			files = append(files, moduleFile{entry: i, path: p, bin: bin, sum: sha256.Sum256(bin)})
		}
	}
	return files, errors.Join(errs...)
}

func isModuleName(name string) bool {
	return !strings.HasPrefix(name, ".") && (strings.HasSuffix(name, ".wasm") || strings.HasSuffix(name, ".wasm.gz"))
}

func moduleFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, ent := range ents {
		if !isModuleName(ent.Name()) {
			continue
		}
		p := filepath.Join(dir, ent.Name())
		fi, err := os.Stat(p) // follows the kubelet's symlinks
		if errors.Is(err, fs.ErrNotExist) {
			continue // a symlink left dangling halfway through an update
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			paths = append(paths, p)
		}
	}
	return paths, nil
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
// replaced modules once their in-flight calls have returned. A failed
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
	old := m.current
	m.current = next
	if m.opts.Apply != nil {
		m.opts.Apply(m.list())
	}
	kept := map[*Filter]bool{}
	byName := map[string]*Filter{}
	for _, l := range next {
		kept[l.f] = true
		byName[l.f.Name()] = l.f
	}
	for _, l := range old {
		if kept[l.f] {
			continue
		}
		if s := byName[l.f.Name()]; s != nil {
			l.f.setSuccessor(s)
		}
		_ = l.f.Close() // waits for its in-flight calls
	}
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
