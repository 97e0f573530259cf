//! The canonical chat/embedding request, response and stream events all dialects map to.
