variable "project_id" {
  type        = string
  description = "GCP project of the bucket."
}

variable "name" {
  type        = string
  description = "Globally unique bucket name for the model weights."
}

variable "location" {
  type        = string
  description = "Bucket location; the cluster's region keeps reads local and free of egress charges."
}

variable "readers" {
  type = list(object({
    namespace       = string
    service_account = string
  }))
  description = "Kubernetes ServiceAccounts (namespace and name) granted read access through Workload Identity."
}

variable "force_destroy" {
  type        = bool
  description = "Allow Terraform to delete the bucket while it still holds weights."
  default     = false
}
