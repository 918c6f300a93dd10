package deploy_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const persistentOverlay = "overlays/persistent"

// kustomizeKinds are the kinds a kustomize build of deploy/ may produce.
var kustomizeKinds = map[string]func() any{
	"apps/v1 Deployment":       func() any { return new(appsv1.Deployment) },
	"v1 Service":               func() any { return new(corev1.Service) },
	"v1 PersistentVolumeClaim": func() any { return new(corev1.PersistentVolumeClaim) },
}

// kustomizeBuild renders dir as `kubectl kustomize --load-restrictor
// LoadRestrictionsNone dir` does (the README's command for the overlay, which
// takes the base's manifest file: kustomize refuses a base directory that
// holds the overlay) and decodes the output strictly.
func kustomizeBuild(t *testing.T, dir string) (*appsv1.Deployment, *corev1.Service, []*corev1.PersistentVolumeClaim) {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	res, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeKinds(out, kustomizeKinds)
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, out)
	}
	dep, svc := oneDeploymentAndService(t, "kustomize build "+dir, objs)
	return dep, svc, ofType[*corev1.PersistentVolumeClaim](objs)
}

func TestPersistentOverlay(t *testing.T) {
	overlay := loadKustomization(t, persistentOverlay+"/"+kustomizationFile)
	base := loadKustomization(t, kustomizationFile)
	// The overlay repeats the base's settings (it cannot take the base
	// directory as a resource): they must not drift apart.
	if overlay.Namespace != base.Namespace || !reflect.DeepEqual(overlay.Images, base.Images) {
		t.Errorf("overlay namespace %q images %+v, base %q %+v: keep them equal", overlay.Namespace, overlay.Images, base.Namespace, base.Images)
	}
	if !slices.Contains(overlay.Resources, "../../"+manifestFile) {
		t.Errorf("overlay resources %v do not take the base's %s", overlay.Resources, manifestFile)
	}

	baseDep, baseSvc, basePVCs := kustomizeBuild(t, ".")
	dep, svc, pvcs := kustomizeBuild(t, persistentOverlay)
	if len(basePVCs) != 0 {
		t.Errorf("the base renders %d PersistentVolumeClaims: deleting the base would delete the checkpoints", len(basePVCs))
	}
	if len(pvcs) != 1 {
		t.Fatalf("the overlay renders %d PersistentVolumeClaims, want 1", len(pvcs))
	}
	pvc := pvcs[0]
	if pvc.Namespace != namespace || dep.Namespace != namespace {
		t.Errorf("namespaces: claim %q, Deployment %q, want %q", pvc.Namespace, dep.Namespace, namespace)
	}
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("claim access modes %v, want [ReadWriteOnce]", pvc.Spec.AccessModes)
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.IsZero() {
		t.Errorf("claim has no storage request")
	}
	if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy %q: a ReadWriteOnce claim needs Recreate", dep.Spec.Strategy.Type)
	}

	v := volume(t, dep, "state")
	if v.EmptyDir != nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Fatalf("overlay state volume %+v, want only the claim %q", v.VolumeSource, pvc.Name)
	}
	if v.PersistentVolumeClaim.ReadOnly {
		t.Errorf("the state claim is mounted read-only")
	}
	if bv := volume(t, baseDep, "state"); bv.EmptyDir == nil {
		t.Errorf("base state volume %+v, want the emptyDir", bv.VolumeSource)
	}

	// Apart from that volume the overlay is the base.
	want := baseDep.DeepCopy()
	for i := range want.Spec.Template.Spec.Volumes {
		if want.Spec.Template.Spec.Volumes[i].Name == "state" {
			want.Spec.Template.Spec.Volumes[i].VolumeSource = v.VolumeSource
		}
	}
	slices.SortFunc(want.Spec.Template.Spec.Volumes, func(a, b corev1.Volume) int { return strings.Compare(a.Name, b.Name) })
	got := dep.DeepCopy()
	slices.SortFunc(got.Spec.Template.Spec.Volumes, func(a, b corev1.Volume) int { return strings.Compare(a.Name, b.Name) })
	if !apiequality.Semantic.DeepEqual(got, want) {
		t.Errorf("the overlay's Deployment differs from the base's beyond the state volume")
	}
	if !apiequality.Semantic.DeepEqual(svc, baseSvc) {
		t.Errorf("the overlay's Service differs from the base's")
	}
}

// loadKustomization decodes a kustomization.yaml strictly.
func loadKustomization(t *testing.T, file string) *kustomization {
	t.Helper()
	objs, err := decodeManifest(readFile(t, file))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	k, ok := objs[0].obj.(*kustomization)
	if len(objs) != 1 || !ok {
		t.Fatalf("%s: want one Kustomization", file)
	}
	return k
}
