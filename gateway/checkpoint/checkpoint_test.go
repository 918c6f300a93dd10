package checkpoint

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

const (
	uuid   = "0a1b2c3d-0000-4000-8000-000000000001"
	source = "https://vc.example.com/sdk"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func pos(sec int64, key int32) gateway.Position {
	return gateway.Position{Time: time.Unix(sec, 123456789).UTC(), Key: key}
}

func TestSaveLoad(t *testing.T) {
	s, err := NewStore(t.TempDir(), nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Load(uuid, source); ok || err != nil {
		t.Fatalf("checkpoint before any was written: %v", err)
	}
	for _, p := range []gateway.Position{pos(100, 5), pos(200, -2147483648)} {
		if err := s.Save(uuid, source, p, nil); err != nil {
			t.Fatal(err)
		}
		f, ok, err := s.Load(uuid, source)
		if err != nil || !ok || !f.Watermark.Time.Equal(p.Time) || f.Watermark.Key != p.Key {
			t.Fatalf("loaded %+v %v, want %+v", f, ok, p)
		}
	}
	if _, ok, _ := s.Load(uuid, "https://other/sdk"); ok {
		t.Fatal("another vCenter's URL found this vCenter's checkpoint")
	}
}

// TestUnusableFilesMovedAside: corrupt, empty, truncated and foreign-URL files
// never panic; each is moved aside and the router starts without one.
func TestUnusableFilesMovedAside(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{"empty", ""},
		{"corrupt", "\x00\x01garbage"},
		{"truncated", `{"version":1,"instanceUuid":"` + uuid + `","sou`},
		{"foreign", `{"version":1,"instanceUuid":"` + uuid + `","source":"https://another/sdk","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`},
		{"no uuid", `{"version":1,"instanceUuid":"","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`},
		{"future version", `{"version":9,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`},
		{"unknown field", `{"version":1,"bogus":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := NewStore(dir, nil, quiet())
			p := s.path(source)
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.Load(uuid, source); ok || err != nil {
				t.Fatalf("an unusable checkpoint was used (err %v)", err)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the unusable file is still in place: %v", err)
			}
			aside, _ := filepath.Glob(p + ".bad-*")
			if len(aside) != 1 {
				t.Fatalf("moved-aside files: %v", aside)
			}
			if kept, _ := os.ReadFile(aside[0]); string(kept) != tt.content {
				t.Errorf("moved-aside content changed")
			}
			// The next save works as usual.
			if err := s.Save(uuid, source, pos(1, 1), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// crashFS is a file-system double whose Rename fails, as a crash between the
// temporary write and the rename would leave things.
type crashFS struct {
	OS
	failRename bool
}

func (c *crashFS) Rename(oldpath, newpath string) error {
	if c.failRename && strings.Contains(oldpath, ".checkpoint-") {
		return errors.New("crash before rename")
	}
	return c.OS.Rename(oldpath, newpath)
}

func TestCrashBeforeRenameKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	fsys := &crashFS{}
	s, _ := NewStore(dir, fsys, quiet())
	if err := s.Save(uuid, source, pos(100, 7), nil); err != nil {
		t.Fatal(err)
	}
	fsys.failRename = true
	if err := s.Save(uuid, source, pos(200, 8), nil); err == nil {
		t.Fatal("save reported success though the rename failed")
	}
	f, ok, _ := s.Load(uuid, source)
	if !ok || f.Watermark.Key != 7 {
		t.Fatalf("previous checkpoint not intact: %+v %v", f, ok)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".checkpoint-*")); len(tmps) != 0 {
		t.Errorf("temporary files left behind: %v", tmps)
	}
}

type fakeWM struct {
	wm     gateway.Position
	ok     bool
	newest gateway.Position
}

func (f *fakeWM) Watermark(string) (gateway.Position, bool) { return f.wm, f.ok }
func (f *fakeWM) Pending() (int, gateway.Position)          { return 0, f.newest }

func TestKeeper(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, nil, quiet())
	m := metrics.New()
	wm := &fakeWM{}
	k := NewKeeper(s, one(wm), 24*time.Hour, "vmware_vcenter", quiet(), m)
	now := time.Unix(1_000_000, 0).UTC()
	if _, ok := k.Resume(uuid, source, now); ok {
		t.Fatal("resume without a checkpoint")
	}
	// Starting from "now" is recorded at once, so a crash before the first
	// watermark resumes there.
	if f, ok, _ := s.Load(uuid, source); !ok || !f.Watermark.Time.Equal(now) || f.Watermark.Key != math.MinInt32 {
		t.Fatalf("initial checkpoint %+v %v", f, ok)
	}
	k.Flush() // nothing acknowledged yet: nothing more written
	if got := testutil.ToFloat64(m.CheckpointWrites.WithLabelValues("vmware_vcenter", "ok")); got != 1 {
		t.Fatalf("checkpoint writes %v before any watermark, want the initial one", got)
	}
	wm.wm, wm.ok, wm.newest = pos(now.Unix()-10, 41), true, pos(now.Unix()-4, 50)
	k.Flush()
	k.Flush() // unchanged: not written again
	if got := testutil.ToFloat64(m.CheckpointWrites.WithLabelValues("vmware_vcenter", "ok")); got != 2 {
		t.Fatalf("checkpoint writes %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.CheckpointLastWrite.WithLabelValues("vmware_vcenter")); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last checkpoint write timestamp %v, want about now", got)
	}

	k2 := NewKeeper(s, one(&fakeWM{}), 24*time.Hour, "vmware_vcenter", quiet(), m)
	p, ok := k2.Resume(uuid, source, now)
	if !ok || p.Key != 41 {
		t.Fatalf("resume %+v %v", p, ok)
	}
	// vCenter's clock says the checkpoint is two days old: the window's
	// beginning instead, counted.
	later := now.Add(48 * time.Hour)
	p, ok = NewKeeper(s, one(&fakeWM{}), 24*time.Hour, "vmware_vcenter", quiet(), m).Resume(uuid, source, later)
	if !ok || !p.Time.Equal(later.Add(-24*time.Hour)) {
		t.Fatalf("resume past the window %+v %v", p, ok)
	}
	if got := testutil.ToFloat64(m.ReplayWindowExceeded.WithLabelValues("vmware_vcenter")); got != 1 {
		t.Errorf("replay window exceeded %v", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":2,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"processors":{"openfaas":{"createdTime":"2026-01-01T00:00:01Z","key":2}},"updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(""))
	f.Add([]byte("{}"))
	f.Add([]byte(`{"version":1,"watermark":{"key":99999999999}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data, source)
		if err == nil && (file.Source != source || file.InstanceUUID == "" || file.Watermark.Time.IsZero()) {
			t.Fatalf("accepted %q as %+v", data, file)
		}
		for name, p := range file.Processors {
			if err == nil && (name == "" || p.Before(file.Watermark)) {
				t.Fatalf("accepted %q with processor %q at %+v before the watermark", data, name, p)
			}
		}
	})
}

// TestResumeAfterUUIDChange: a vCenter restored or replaced at its address
// answers with another instance UUID: it resumes by time after the
// checkpoint (smallest key), says so naming both UUIDs, and the checkpoint
// follows the new UUID; the stream may ask again on a later reconnect.
func TestResumeAfterUUIDChange(t *testing.T) {
	const newUUID = "0a1b2c3d-0000-4000-8000-000000000002"
	dir := t.TempDir()
	s, _ := NewStore(dir, nil, quiet())
	if err := s.Save(uuid, source, pos(1_000_000, 41), nil); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	wm := &fakeWM{}
	k := NewKeeper(s, one(wm), 24*time.Hour, "vmware_vcenter", slog.New(slog.NewTextHandler(&log, nil)), metrics.New())
	now := time.Unix(1_000_100, 0).UTC()
	p, ok := k.Resume(newUUID, source, now)
	if !ok || !p.Time.Equal(pos(1_000_000, 0).Time) || p.Key != math.MinInt32 {
		t.Fatalf("resume after a UUID change: %+v %v, want the checkpoint's time and key MinInt32", p, ok)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "checkpoint_instance_uuid="+uuid) ||
		!strings.Contains(log.String(), "instance_uuid="+newUUID) {
		t.Errorf("the warning does not name both UUIDs:\n%s", log.String())
	}
	f, ok, err := s.Load(newUUID, source)
	if err != nil || !ok || f.InstanceUUID != newUUID || f.Watermark != p {
		t.Fatalf("checkpoint after the change: %+v %v %v", f, ok, err)
	}
	wm.wm, wm.ok = pos(1_000_050, 3), true
	k.Flush()
	f, _, _ = s.Load(newUUID, source)
	if f.InstanceUUID != newUUID || f.Watermark.Key != 3 {
		t.Fatalf("saved after the change: %+v", f)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "*.bad-*")); len(aside) != 0 {
		t.Errorf("checkpoint moved aside: %v", aside)
	}
	// The same UUID again: the exact position.
	if p, ok := k.Resume(newUUID, source, now); !ok || p.Key != 3 {
		t.Errorf("resume with the same UUID: %+v %v", p, ok)
	}
	// Changed once more during the run (the stream reconnected to
	// another instance): by time again.
	if p, ok := k.Resume(uuid, source, now); !ok || p.Key != math.MinInt32 || !p.Time.Equal(pos(1_000_050, 0).Time) {
		t.Errorf("resume after a second change: %+v %v", p, ok)
	}
}

// TestLegacyFileMoved: the first release's file (named after UUID and URL)
// is found and moved to the URL's name.
func TestLegacyFileMoved(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, nil, quiet())
	content := `{"version":1,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":9},"updated":"2026-01-01T00:00:00Z"}`
	if err := os.WriteFile(s.legacyPath(uuid, source), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, ok, err := s.Load(uuid, source)
	if err != nil || !ok || f.Watermark.Key != 9 {
		t.Fatalf("legacy checkpoint: %+v %v %v", f, ok, err)
	}
	if _, err := os.Stat(s.path(source)); err != nil {
		t.Errorf("not moved to the new name: %v", err)
	}
	if _, err := os.Stat(s.legacyPath(uuid, source)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("legacy file still there: %v", err)
	}
}

// brokenReadFS fails every ReadFile with an I/O error, as a failing disk
// does.
type brokenReadFS struct{ OS }

func (brokenReadFS) ReadFile(string) ([]byte, error) { return nil, syscall.EIO }

// TestUnreadableCheckpointIsAnError: a checkpoint that cannot be read (not
// a corrupt one) is neither moved aside nor overwritten by "now": the keeper
// reports it, naming the file and the cause, and writes nothing more.
func TestUnreadableCheckpointIsAnError(t *testing.T) {
	dir := t.TempDir()
	good, _ := NewStore(dir, nil, quiet())
	if err := good.Save(uuid, source, pos(100, 7), nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(good.path(source))
	s, _ := NewStore(dir, brokenReadFS{}, quiet())
	wm := &fakeWM{wm: pos(200, 8), ok: true}
	k := NewKeeper(s, one(wm), 24*time.Hour, "vmware_vcenter", quiet(), metrics.New())
	if _, ok := k.Resume(uuid, source, time.Unix(300, 0)); ok {
		t.Fatal("resumed from a checkpoint that could not be read")
	}
	select {
	case err := <-k.Failed():
		if !strings.Contains(err.Error(), s.path(source)) || !errors.Is(err, syscall.EIO) {
			t.Errorf("error %q does not name the file and the cause", err)
		}
	default:
		t.Fatal("Failed() reported nothing")
	}
	k.Flush()
	k.Stop()
	after, err := os.ReadFile(good.path(source))
	if err != nil || string(after) != string(before) {
		t.Errorf("the checkpoint changed: %v\n%s", err, after)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "*.bad-*")); len(aside) != 0 {
		t.Errorf("an unreadable checkpoint was moved aside: %v", aside)
	}
}

// countingWM hands out a newer watermark at each call.
type countingWM struct{ n atomic.Int32 }

func (c *countingWM) Watermark(string) (gateway.Position, bool) { return pos(1000, c.n.Add(1)), true }
func (c *countingWM) Pending() (int, gateway.Position)          { return 0, gateway.Position{} }

// watchFS records every checkpoint a Store commits and whether two saves
// ever ran at once.
type watchFS struct {
	OS
	inFlight, overlap atomic.Int32
	mu                sync.Mutex
	keys              []int32
	loopDone          []bool // per commit: the keeper's loop had returned
	k                 *Keeper
}

func (w *watchFS) CreateTemp(dir, pattern string) (TempFile, error) {
	if w.inFlight.Add(1) > 1 {
		w.overlap.Add(1)
	}
	return w.OS.CreateTemp(dir, pattern)
}

func (w *watchFS) Rename(oldpath, newpath string) error {
	defer w.inFlight.Add(-1)
	data, err := os.ReadFile(oldpath)
	if err != nil {
		return err
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	done := false
	w.k.mu.Lock()
	if w.k.done != nil {
		select {
		case <-w.k.done:
			done = true
		default:
		}
	}
	w.k.mu.Unlock()
	w.mu.Lock()
	w.keys = append(w.keys, f.Watermark.Key)
	w.loopDone = append(w.loopDone, done)
	w.mu.Unlock()
	return w.OS.Rename(oldpath, newpath)
}

// TestKeeperSavesSerializedAndStopLast: the loop's flushes and any other
// Flush never save at once nor write an older watermark after a newer one;
// Stop ends the loop before its final save, which holds the newest
// watermark, and nothing is saved after it.
func TestKeeperSavesSerializedAndStopLast(t *testing.T) {
	dir := t.TempDir()
	fsys := &watchFS{}
	s, _ := NewStore(dir, fsys, quiet())
	wm := &countingWM{}
	k := NewKeeper(s, one(wm), 0, "vmware_vcenter", quiet(), metrics.New())
	fsys.k = k
	k.Resume(uuid, source, time.Unix(1000, 0))
	k.Start()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				k.Flush()
			}
		}()
	}
	wg.Wait()
	k.Stop()
	last := wm.n.Load()
	k.Flush() // after Stop: nothing more
	if n := fsys.overlap.Load(); n != 0 {
		t.Errorf("%d saves overlapped another", n)
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	keys := fsys.keys[1:] // after the initial checkpoint (MinInt32)
	for i := 1; i < len(keys); i++ {
		if keys[i] <= keys[i-1] {
			t.Fatalf("watermark %d written after %d", keys[i], keys[i-1])
		}
	}
	if got := keys[len(keys)-1]; got != last {
		t.Errorf("final checkpoint key %d, want the newest watermark %d (or something was saved after Stop)", got, last)
	}
	if !fsys.loopDone[len(fsys.loopDone)-1] {
		t.Error("the final save ran while the keeper's loop was still running")
	}
	f, _, _ := s.Load(uuid, source)
	if f.Watermark.Key != last {
		t.Errorf("file holds key %d, want %d", f.Watermark.Key, last)
	}
}

// one is the keeper's processors when one processor takes the stream.
func one(w Watermarker) []Processor { return []Processor{{Name: "openfaas", Watermarks: w}} }
