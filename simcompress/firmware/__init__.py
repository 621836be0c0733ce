"""simcompress.firmware"""
