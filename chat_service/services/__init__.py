"""Business rules. Each public function is one unit of work and raises only ``errors.*``."""
