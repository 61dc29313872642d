//! The MTA's channel programs share everything but their delivery step:
//! [`master`] is the job loop, queue-file settling and notices around it;
//! [`dsn`] builds the notices (RFC 3464); [`client`] is the SMTP/LMTP
//! client the outbound channels and `sendmail` speak; [`defragment`]
//! holds `message/partial` parts and reassembles them.

pub mod client;
pub mod defragment;
pub mod dsn;
pub mod master;
pub mod outbound;
pub mod store_delivery;
