package checkpoint

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
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
	if _, ok := s.Load(uuid, source); ok {
		t.Fatal("checkpoint before any was written")
	}
	for _, p := range []gateway.Position{pos(100, 5), pos(200, -2147483648)} {
		if err := s.Save(uuid, source, p); err != nil {
			t.Fatal(err)
		}
		f, ok := s.Load(uuid, source)
		if !ok || !f.Watermark.Time.Equal(p.Time) || f.Watermark.Key != p.Key {
			t.Fatalf("loaded %+v %v, want %+v", f, ok, p)
		}
	}
	if _, ok := s.Load(uuid, "https://other/sdk"); ok {
		t.Fatal("another vCenter's URL found this vCenter's checkpoint")
	}
}

// TestUnusableFilesMovedAside: corrupt, empty, truncated and foreign files
// never panic; each is moved aside and the router starts without one.
func TestUnusableFilesMovedAside(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{"empty", ""},
		{"corrupt", "\x00\x01garbage"},
		{"truncated", `{"version":1,"instanceUuid":"` + uuid + `","sou`},
		{"foreign", `{"version":1,"instanceUuid":"another","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`},
		{"future version", `{"version":9,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`},
		{"unknown field", `{"version":1,"bogus":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := NewStore(dir, nil, quiet())
			p := s.path(uuid, source)
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, ok := s.Load(uuid, source); ok {
				t.Fatal("an unusable checkpoint was used")
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
			if err := s.Save(uuid, source, pos(1, 1)); err != nil {
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
	if err := s.Save(uuid, source, pos(100, 7)); err != nil {
		t.Fatal(err)
	}
	fsys.failRename = true
	if err := s.Save(uuid, source, pos(200, 8)); err == nil {
		t.Fatal("save reported success though the rename failed")
	}
	f, ok := s.Load(uuid, source)
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

func (f *fakeWM) Watermark() (gateway.Position, bool) { return f.wm, f.ok }
func (f *fakeWM) Pending() (int, gateway.Position)    { return 0, f.newest }

func TestKeeper(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewStore(dir, nil, quiet())
	m := metrics.New()
	wm := &fakeWM{}
	k := NewKeeper(s, wm, 24*time.Hour, "vmware_vcenter", quiet(), m)
	now := time.Unix(1_000_000, 0).UTC()
	if _, ok := k.Resume(uuid, source, now); ok {
		t.Fatal("resume without a checkpoint")
	}
	// Starting from "now" is recorded at once, so a crash before the first
	// watermark resumes there.
	if f, ok := s.Load(uuid, source); !ok || !f.Watermark.Time.Equal(now) || f.Watermark.Key != math.MinInt32 {
		t.Fatalf("initial checkpoint %+v %v", f, ok)
	}
	k.Flush() // nothing acknowledged yet: nothing more written
	if got := testutil.ToFloat64(m.CheckpointWrites.WithLabelValues("ok")); got != 1 {
		t.Fatalf("checkpoint writes %v before any watermark, want the initial one", got)
	}
	wm.wm, wm.ok, wm.newest = pos(now.Unix()-10, 41), true, pos(now.Unix()-4, 50)
	k.Flush()
	k.Flush() // unchanged: not written again
	if got := testutil.ToFloat64(m.CheckpointWrites.WithLabelValues("ok")); got != 2 {
		t.Fatalf("checkpoint writes %v, want 2", got)
	}
	if lag := testutil.ToFloat64(m.WatermarkLag.WithLabelValues("vmware_vcenter")); lag != 6 {
		t.Errorf("watermark lag %v, want 6", lag)
	}

	k2 := NewKeeper(s, &fakeWM{}, 24*time.Hour, "vmware_vcenter", quiet(), m)
	p, ok := k2.Resume(uuid, source, now)
	if !ok || p.Key != 41 {
		t.Fatalf("resume %+v %v", p, ok)
	}
	// vCenter's clock says the checkpoint is two days old: the window's
	// beginning instead, counted.
	later := now.Add(48 * time.Hour)
	p, ok = NewKeeper(s, &fakeWM{}, 24*time.Hour, "vmware_vcenter", quiet(), m).Resume(uuid, source, later)
	if !ok || !p.Time.Equal(later.Add(-24*time.Hour)) {
		t.Fatalf("resume past the window %+v %v", p, ok)
	}
	if got := testutil.ToFloat64(m.ReplayWindowExceeded.WithLabelValues("vmware_vcenter")); got != 1 {
		t.Errorf("replay window exceeded %v", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"instanceUuid":"` + uuid + `","source":"` + source + `","watermark":{"createdTime":"2026-01-01T00:00:00Z","key":1},"updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(""))
	f.Add([]byte("{}"))
	f.Add([]byte(`{"version":1,"watermark":{"key":99999999999}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data, uuid, source)
		if err == nil && (file.InstanceUUID != uuid || file.Watermark.Time.IsZero()) {
			t.Fatalf("accepted %q as %+v", data, file)
		}
	})
}
