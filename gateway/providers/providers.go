// Package providers registers every stream and processor kind with the
// configuration loader: importing it is what makes the loader know them.
// Adding a provider is its package's Spec and one line here.
package providers

import (
	"github.com/vmware-samples/vmware-event-router/gateway/cloudevents"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/eventbridge"
	"github.com/vmware-samples/vmware-event-router/gateway/openfaas"
	"github.com/vmware-samples/vmware-event-router/gateway/stdout"
	"github.com/vmware-samples/vmware-event-router/gateway/vcenter"
)

func init() {
	config.Register(
		vcenter.Spec,
		vcenter.SimSpec,
		openfaas.Spec,
		eventbridge.Spec,
		cloudevents.Spec,
		stdout.Spec,
	)
}
