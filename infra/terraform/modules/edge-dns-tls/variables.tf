variable "project_id" {
  type        = string
  description = "GCP project of the address, the certificate and the DNS zone."
}

variable "name" {
  type        = string
  description = "Name prefix of the static IP and the certificate."
}

variable "hostname" {
  type        = string
  description = "Public DNS name of the API, e.g. api.example.com (without the trailing dot)."
}

variable "dns_zone_name" {
  type        = string
  description = "Name of the existing Cloud DNS managed zone that holds hostname."
}

variable "dns_ttl" {
  type        = number
  description = "TTL in seconds of the A record."
  default     = 300
}
