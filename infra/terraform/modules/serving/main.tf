# The in-cluster release of infra/helm/minicpmv. GKE specifics (GCS FUSE weights volume, GPU node
# selector, Ingress annotations, BackendConfig) are set here, in values.yaml.tftpl, so the chart
# itself stays cloud-neutral.

locals {
  chart_values = {
    image_registry     = var.image_registry
    image_tag          = var.image_tag
    weights_bucket     = var.weights_bucket
    weights_prefix     = var.weights_prefix
    gpu_node_selector  = jsonencode(var.gpu_node_selector)
    gpu_replicas       = var.gpu_replicas
    gpu_cpu_request    = var.gpu_cpu_request
    gpu_memory_request = var.gpu_memory_request
    gpu_memory_limit   = var.gpu_memory_limit
    hostname           = var.hostname
    static_ip_name     = var.static_ip_name
    certificate_name   = var.certificate_name
  }
}

resource "helm_release" "minicpmv" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = true
  chart            = var.chart_path
  values           = [templatefile("${path.module}/values.yaml.tftpl", local.chart_values)]
  wait             = true
  atomic           = true
  timeout          = var.timeout_seconds

  set_sensitive {
    name  = "apiKeys.value"
    value = join(",", var.api_keys)
  }
}
