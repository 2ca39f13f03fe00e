variable "release_name" {
  type        = string
  description = "Helm release name; prefixes every Kubernetes object (RELEASE-edge, RELEASE-gpu-service, ...)."
  default     = "minicpmv"
}

variable "namespace" {
  type        = string
  description = "Namespace of the release (created if missing)."
  default     = "minicpmv"
}

variable "chart_path" {
  type        = string
  description = "Path of the minicpmv Helm chart (infra/helm/minicpmv)."
}

variable "image_registry" {
  type        = string
  description = "Registry prefix of the three images, e.g. us-central1-docker.pkg.dev/PROJECT/minicpmv."
}

variable "image_tag" {
  type        = string
  description = "Tag of the three images (one version of the stack)."
}

variable "api_keys" {
  type        = list(string)
  description = "Bearer keys the edge accepts (stored in a Kubernetes Secret); empty leaves the API open."
  sensitive   = true
}

variable "weights_bucket" {
  type        = string
  description = "Bucket holding the checkpoint directory (weights-bucket module output)."
}

variable "weights_prefix" {
  type        = string
  description = "Directory of the checkpoint inside the bucket; MODEL_DIR becomes /models/<prefix>."
  default     = "MiniCPM-V-2_6"
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "Node labels that place gpu-service pods on the GPU pool (gke module output)."
}

variable "gpu_replicas" {
  type        = number
  description = "gpu-service replicas (one GPU each); the GPU pool autoscaler adds nodes for them."
  default     = 1
}

variable "gpu_memory_request" {
  type        = string
  description = "Host memory request of a gpu-service pod; the loader holds the weights in RAM while uploading them (see docs/deploy.md)."
  default     = "40Gi"
}

variable "gpu_memory_limit" {
  type        = string
  description = "Host memory limit of a gpu-service pod."
  default     = "56Gi"
}

variable "gpu_cpu_request" {
  type        = string
  description = "CPU request of a gpu-service pod (tokenizer, scheduler, ONNX Runtime host threads)."
  default     = "6"
}

variable "hostname" {
  type        = string
  description = "Public host name of the API (edge-dns-tls module input)."
}

variable "static_ip_name" {
  type        = string
  description = "Global static IP name for the Ingress (edge-dns-tls module output)."
}

variable "certificate_name" {
  type        = string
  description = "Managed certificate name for the Ingress (edge-dns-tls module output)."
}

variable "timeout_seconds" {
  type        = number
  description = "How long helm waits for every pod to be ready; covers GPU node creation plus the weight load."
  default     = 2400
}
