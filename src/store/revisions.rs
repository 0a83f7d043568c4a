//! Revisions of the campaign directory and the versions of the specs they put in force.
