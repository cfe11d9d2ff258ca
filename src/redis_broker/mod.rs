//! How celeriac talks to a Redis broker, shared by the `celery_redis` and `redis_queues`
//! receivers and the `celery_ui` extension: the RESP wire format of its own clients
//! ([`resp`]).

pub mod resp;
