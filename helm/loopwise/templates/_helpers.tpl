{{/* Chart name and release-scoped names. */}}
{{- define "loopwise.fullname" -}}
{{- if contains "loopwise" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-loopwise" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "loopwise.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: loopwise
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one service: dict "root" $ "name" <service>. */}}
{{- define "loopwise.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* One service's settings: `default` overlaid with its entry (YAML). */}}
{{- define "loopwise.service" -}}
{{- $svc := index .root.Values.services .name -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.default) (deepCopy $svc)) -}}
{{- end -}}

{{/* Whether a merged service keeps local state (StatefulSet): dict "svc" $cfg. */}}
{{- define "loopwise.stateful" -}}
{{- if and .svc.state.enabled (not (and .svc.state.unlessDatabase .svc.database.existingSecret)) -}}true{{- end -}}
{{- end -}}

{{- define "loopwise.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s/%s:%s" .root.Values.image.registry .root.Values.image.repository .name $tag -}}
{{- else -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name $tag -}}
{{- end -}}
{{- end -}}

{{/* ConfigMap key of a mounted file path (keys cannot hold "/"). */}}
{{- define "loopwise.fileKey" -}}
{{- . | replace "/" "__" -}}
{{- end -}}

{{/* KAFKA_* environment of every container. */}}
{{- define "loopwise.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" $k.bootstrapServers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if $k.saslMechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $k.saslMechanism | quote }}
{{- end }}
{{- if hasPrefix "SASL" $k.securityProtocol }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required with a SASL security protocol" $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- if $k.tls.existingSecret }}
- name: KAFKA_SSL_CA_LOCATION
  value: /etc/loopwise/kafka-tls/{{ $k.tls.caKey }}
{{- if and $k.tls.certificateKey $k.tls.keyKey }}
- name: KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/loopwise/kafka-tls/{{ $k.tls.certificateKey }}
- name: KAFKA_SSL_KEY_LOCATION
  value: /etc/loopwise/kafka-tls/{{ $k.tls.keyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "loopwise.kafkaTlsVolume" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "loopwise.kafkaTlsMount" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/loopwise/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}
