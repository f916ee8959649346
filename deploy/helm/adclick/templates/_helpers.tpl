{{/* Name of the chart, or nameOverride. */}}
{{- define "adclick.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified release name: objects are named <fullname>-<component>. */}}
{{- define "adclick.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. Call with (dict "ctx" $ "component" "router"). */}}
{{- define "adclick.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: adclick
{{ include "adclick.selectorLabels" . }}
{{- end -}}

{{/* Labels that select one component's pods. */}}
{{- define "adclick.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adclick.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image of one binary: (dict "ctx" $ "binary" "router"). */}}
{{- define "adclick.image" -}}
{{ printf "%s/%s:%s" .ctx.Values.image.repository .binary .ctx.Values.image.tag }}
{{- end -}}

{{/* etcd client endpoints, comma-separated. */}}
{{- define "adclick.etcdEndpoints" -}}
{{- if .Values.etcd.external.endpoints -}}
{{- join "," .Values.etcd.external.endpoints -}}
{{- else -}}
{{- printf "%s-etcd:%d" (include "adclick.fullname" .) (int .Values.etcd.port) -}}
{{- end -}}
{{- end -}}

{{/* The founding aggregators: the StatefulSet's first initialReplicas pod names. */}}
{{- define "adclick.initialAggregators" -}}
{{- $full := include "adclick.fullname" . -}}
{{- $names := list -}}
{{- range $i := until (int .Values.aggregator.initialReplicas) -}}
{{- $names = append $names (printf "%s-aggregator-%d" $full $i) -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Environment every server pod gets from the downward API. */}}
{{- define "adclick.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
{{- end -}}

{{/* Flags every server takes: (dict "ctx" $ "role" "aggregator" "ports" .Values.aggregator.ports "advertise" "<host>"). */}}
{{- define "adclick.commonArgs" -}}
{{- $ctx := .ctx -}}
- --etcd-endpoints={{ include "adclick.etcdEndpoints" $ctx }}
- --grpc-addr=0.0.0.0:{{ .ports.grpc }}
- --http-addr=0.0.0.0:{{ .ports.http }}
- --advertise-addr={{ .advertise }}:{{ .ports.grpc }}
- --gossip-addr=0.0.0.0:{{ $ctx.Values.gossip.port }}
- --gossip-advertise-addr=$(POD_IP):{{ $ctx.Values.gossip.port }}
{{- if $ctx.Values.gossip.joinViaService }}
- --gossip-join={{ include "adclick.fullname" $ctx }}-gossip.$(POD_NAMESPACE).svc:{{ $ctx.Values.gossip.port }}
{{- end }}
{{- end -}}

{{/* Container ports of a server: (dict "ctx" $ "ports" .Values.router.ports). */}}
{{- define "adclick.containerPorts" -}}
- name: grpc
  containerPort: {{ .ports.grpc }}
  protocol: TCP
- name: http
  containerPort: {{ .ports.http }}
  protocol: TCP
- name: gossip-tcp
  containerPort: {{ .ctx.Values.gossip.port }}
  protocol: TCP
- name: gossip-udp
  containerPort: {{ .ctx.Values.gossip.port }}
  protocol: UDP
{{- end -}}

{{/* gRPC health probes on the gRPC port: (dict "ctx" $ "port" 7171 "startup" true). */}}
{{- define "adclick.probes" -}}
{{- $p := .ctx.Values.probes -}}
readinessProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: {{ $p.periodSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
livenessProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: {{ $p.periodSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
{{- if .startup }}
startupProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 5
  failureThreshold: {{ div (int $p.startupSeconds) 5 }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every workload. */}}
{{- define "adclick.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
